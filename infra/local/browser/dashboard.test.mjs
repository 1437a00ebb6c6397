// The dashboard in a real browser: Debian's chromium driven by playwright-core, against the page
// served by `flightdeck-local-api` on the local stack with real deployments in it. Run by
// infra/local/browser-test (which installs both and starts the server); prints one line per test
// and the figures, writes screenshots to infra/local/browser/screenshots/ and exits 1 on a failure.
import { chromium } from "playwright-core";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createHash, randomBytes } from "node:crypto";

const base = process.env.FLIGHTDECK_URL || "http://127.0.0.1:4595";
const here = dirname(fileURLToPath(import.meta.url));
const shots = join(here, "screenshots");
mkdirSync(shots, { recursive: true });
const DEV = "dev@example.com";
const LEAD = "lead@example.com";

// ---- the API, as the page calls it (same routes, a local user instead of a sign-in token)
async function api(method, path, body, user = DEV) {
  const response = await fetch(`${base}/ui${path}`, {
    method,
    headers: { "content-type": "application/json", "x-flightdeck-local-user": user },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}
const digest = (prefix = "") => `sha256:${(prefix + createHash("sha256").update(randomBytes(16)).digest("hex")).slice(0, 64)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, check, seconds = 60) {
  const end = Date.now() + seconds * 1000;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(500);
  }
}
async function deploy(environment, image) {
  const d = await api("POST", "/deployments", { service: "checkout-api", environment, image });
  return d.id;
}
const statusOf = async (id) => (await api("GET", `/deployments/${id}`)).status;
const ended = (s) => ["SUCCEEDED", "ROLLED_BACK", "FAILED", "ABORTED", "SUPERSEDED"].includes(s);
async function settle(id) {
  return until(`${id} to end`, async () => { const s = await statusOf(id); return ended(s) ? s : null; });
}
const shortDigest = (d) => d.replace(/^sha256:/, "").slice(0, 12);

// ---- the tests
const results = [];
const figures = {};
async function test(name, body) {
  const started = Date.now();
  try {
    await body();
    results.push({ name, ok: true });
    console.log(`ok - ${name} (${((Date.now() - started) / 1000).toFixed(1)}s)`);
  } catch (e) {
    results.push({ name, ok: false, error: e.message });
    console.log(`not ok - ${name}: ${e.message}`);
  }
}
function expect(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
const page = await context.newPage();
const consoleErrors = [];
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
page.on("pageerror", (e) => consoleErrors.push(e.message));
page.on("dialog", (d) => d.accept());

try {
  // Real deployments first: one that succeeds, one whose tasks cannot start (rolled back by the
  // crash limit), and one in production that waits for approval.
  const good = digest();
  const goodId = await deploy("staging", good);
  expect((await settle(goodId)) === "SUCCEEDED", "the first staging deployment succeeds");
  const badId = await deploy("staging", digest("bad"));
  expect((await settle(badId)) === "ROLLED_BACK", "the crashing deployment is rolled back");
  const approvalId = await deploy("production", digest());
  await until("the production deployment to await approval", async () => (await statusOf(approvalId)) === "AWAITING_APPROVAL");

  await test("the page lists the services, their current revision and the deployments", async () => {
    const t0 = Date.now();
    await page.goto(`${base}/`);
    await page.waitForSelector("body[data-loaded]");
    figures.first_data_render_ms = Date.now() - t0;
    figures.first_contentful_paint_ms = await page.evaluate(() => {
      const p = performance.getEntriesByName("first-contentful-paint")[0];
      return p ? Math.round(p.startTime) : null;
    });
    const staging = page.locator('article[data-service="checkout-api"][data-environment="staging"]');
    await staging.waitFor();
    expect((await staging.innerText()).includes(shortDigest(good)), "staging shows the revision that serves");
    const production = page.locator('article[data-service="checkout-api"][data-environment="production"]');
    expect((await production.innerText()).toLowerCase().includes("awaiting approval"), "production shows the deployment in flight");
    const failures = await page.locator("#failures").innerText();
    expect(failures.includes("exec format error"), `the rollback is listed with its reason: ${failures}`);
    expect((await page.locator("#dora").innerText()).includes("change failure rate"), "DORA figures are shown");
    await page.screenshot({ path: join(shots, "overview.png"), fullPage: true });
  });

  await test("the timeline of a rolled-back deployment shows its classified reason", async () => {
    await page.locator(`#failures li[data-deployment="${badId}"] button`).click();
    const timeline = page.locator(`#timeline article[data-deployment="${badId}"]`);
    await timeline.waitFor();
    const task = timeline.locator("li.k-row-task").first();
    await task.waitFor();
    const text = await task.innerText();
    expect(/exec format error/i.test(text), `a task failure entry names its classified reason: ${text}`);
    expect(await timeline.locator(".tl-mark.k-task").count() > 0, "the visual track marks the task failures");
    expect((await timeline.innerText()).includes("rolled back"), "the status changes are on the timeline");
    expect(await page.evaluate(() => document.activeElement && document.activeElement.id) === "timeline-title", "focus moves to the timeline");
    await page.locator("#timeline-section").screenshot({ path: join(shots, "timeline.png") });
    await page.keyboard.press("Escape");
    await until("the timeline to close", () => page.locator("#timeline-section").isHidden(), 5);
  });

  await test("a self-approval is refused with the API's message shown", async () => {
    await page.selectOption("#user", DEV);
    const approve = page.locator(`#approvals li[data-deployment="${approvalId}"] button[data-action="approve"]`);
    await approve.waitFor();
    const hint = await page.locator(`#approvals li[data-deployment="${approvalId}"] .four-eyes`).innerText();
    expect(hint.includes("You started it"), `the four-eyes rule is visible: ${hint}`);
    await approve.click();
    const notice = page.locator("#notice");
    await notice.waitFor();
    const text = await notice.innerText();
    expect(/cannot approve it; another approver must/.test(text), `the refusal is shown: ${text}`);
    expect((await statusOf(approvalId)) === "AWAITING_APPROVAL", "the deployment still waits");
    await page.screenshot({ path: join(shots, "four-eyes-refused.png") });
  });

  await test("an approval made on the page starts the deployment and the page follows it", async () => {
    await page.selectOption("#user", LEAD);
    const approve = page.locator(`#approvals li[data-deployment="${approvalId}"] button[data-action="approve"]`);
    await approve.waitFor();
    await approve.click();
    await until("the notice of the approval", async () => /accepted/.test(await page.locator("#notice").innerText()), 10);
    expect((await statusOf(approvalId)) !== "AWAITING_APPROVAL", "the deployment left approval");
    // No reload: the page polls and shows production serving the approved revision.
    const production = page.locator('article[data-service="checkout-api"][data-environment="production"]');
    const approved = (await api("GET", `/deployments/${approvalId}`)).digest;
    await until("production to serve the approved revision on the page", async () =>
      (await production.innerText()).includes(shortDigest(approved)) && (await production.innerText()).includes("No deployment in flight"), 60);
  });

  await test("the page updates by itself when a deployment advances", async () => {
    const loads = await page.evaluate(() => performance.getEntriesByType("navigation").length);
    const next = digest();
    const id = await deploy("staging", next);
    const staging = page.locator('article[data-service="checkout-api"][data-environment="staging"]');
    await until("the page to show the new deployment or its result", async () =>
      (await staging.innerText()).includes(shortDigest(next)), 30);
    await settle(id);
    await until("the page to show the new revision serving", async () => {
      const serving = await staging.locator("dl.facts").innerText();
      return serving.includes(shortDigest(next));
    }, 30);
    expect(await page.evaluate(() => performance.getEntriesByType("navigation").length) === loads, "no reload");
  });

  await test("stale data is marked stale when the API stops answering", async () => {
    const stale = await context.newPage();
    await stale.goto(`${base}/?poll=1`);
    await stale.waitForSelector("body[data-loaded]");
    await stale.route("**/ui/**", (route) => route.abort());
    await until("the stale marker", async () => /Stale: last updated/.test(await stale.locator("#freshness").innerText()), 15);
    expect(await stale.locator("#freshness.stale").count() === 1, "the marker is styled as a warning");
    await stale.close();
  });

  await test("it works on a phone and by keyboard, with every control labelled", async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const p = await phone.newPage();
    await p.goto(`${base}/`);
    await p.waitForSelector("body[data-loaded]");
    const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow <= 0, `no sideways scrolling on a phone (${overflow}px too wide)`);
    await p.screenshot({ path: join(shots, "phone.png"), fullPage: true });
    const unlabelled = await p.evaluate(() => [...document.querySelectorAll("button, select, a[href]")]
      .filter((n) => !(n.getAttribute("aria-label") || n.textContent.trim() || (n.id && document.querySelector(`label[for="${n.id}"]`))))
      .map((n) => n.outerHTML.slice(0, 80)));
    expect(unlabelled.length === 0, `controls without a name: ${unlabelled.join(" | ")}`);
    // Keyboard: Tab from the top reaches a Timeline button, and Enter opens it.
    let reached = false;
    for (let i = 0; i < 40 && !reached; i++) {
      await p.keyboard.press("Tab");
      reached = await p.evaluate(() => (document.activeElement.getAttribute("aria-label") || "").startsWith("Timeline of"));
    }
    expect(reached, "a timeline button is reachable by Tab");
    await p.keyboard.press("Enter");
    await p.locator("#timeline-section:not([hidden])").waitFor({ timeout: 10000 });
    await phone.close();
  });

  await test("the page loads without script errors or blocked resources", async () => {
    expect(consoleErrors.filter((e) => !/Failed to load resource|ERR_FAILED/.test(e)).length === 0, consoleErrors.join(" | "));
  });

  // Page weight: what the browser downloads for the page (HTML + JS + CSS).
  let bytes = 0;
  for (const path of ["/", "/assets/app.js", "/assets/app.css"]) bytes += (await (await fetch(`${base}${path}`)).arrayBuffer()).byteLength;
  figures.page_weight_bytes = bytes;
} finally {
  await browser.close();
}

const failed = results.filter((r) => !r.ok);
console.log(`browser tests: ${results.length - failed.length} passed, ${failed.length} failed`);
console.log(`figures: ${JSON.stringify(figures)}`);
writeFileSync(join(shots, "results.json"), JSON.stringify({ results, figures }, null, 2));
console.log(`screenshots: ${shots}/{overview,timeline,four-eyes-refused,phone}.png`);
process.exit(failed.length ? 1 : 0);

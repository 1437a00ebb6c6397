//! Handler-level reproductions of defects found in review, over the simulation's in-memory AWS
//! (`tests/src/sim`). Each test drives the real handlers through a hand-made schedule (no random
//! faults): scripted failures come from thin wrappers around the simulation's ports, and
//! interleavings from polling handler futures one await point at a time. Every test here pins
//! down the behaviour the design asks for and failed on the code it was written against.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use chrono::Duration;
use flightdeck::api::{self, ApiConfig, ApiRequest};
use flightdeck::deployment::{Deployment, Listener, Status, push_deployment_id};
use flightdeck::handlers::{Ports, on_alarm, on_ecs_event, on_image_push, shifter};
use flightdeck::ports::{EcsControl, EcsService, PortError, PortResult, Tags, TrafficControl};
use flightdeck::registration::Registration;
use flightdeck_local::sim::ecs::{self, Quality, Task, TaskStatus};
use flightdeck_local::sim::events;
use flightdeck_local::sim::ports::{
    Alarms, Ecs as SimEcs, Images, Sim, SimClock, Sns, Store, Traffic as SimTraffic, YieldOnce,
};
use flightdeck_local::sim::world::{ACCOUNT, Alarm, REGION, RuleAction, Target, World};

const CLUSTER: &str = "sim";
const ADMIN: &str = "arn:aws:iam::123456789012:role/platform-admin";
const RULE: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener-rule/app/sim/50dc6c495c0c9188/f2f7dc8efc522ab2/9683b2d02a6cabee";
const TG_BLUE: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-blue/00000000000000b1";
const TG_GREEN: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-green/0000000000000092";

// ---------------------------------------------------------------------------------------------
// Scripted faults around the simulation's ports.

#[derive(Default)]
struct Script {
    /// The next listener write waits (in flight) until `release`, then fails with a throttle.
    hold_next_set_weights: bool,
    held: bool,
    release: bool,
    /// Faults of the next UpdateService calls that change a task definition: "lost" (the call
    /// takes effect, its answer is lost) or "before" (throttled, no effect).
    update_service_faults: VecDeque<&'static str>,
    /// The next RegisterTaskDefinition calls take effect with their answer lost.
    register_lost: u32,
    /// RegisterTaskDefinition never answers (the invocation times out in it).
    register_hangs: bool,
    /// Every RegisterTaskDefinition fails before it takes effect (e.g. the role lacks
    /// iam:PassRole for the task role, or the call keeps being throttled).
    register_fails: bool,
    /// The next scale call never answers (the invocation times out in it).
    scale_hangs: bool,
    /// Faults of the next listener writes, as `update_service_faults`: "lost" (the weights are
    /// set, the answer is lost) or "before" (throttled, no effect).
    set_weights_faults: VecDeque<&'static str>,
    /// The next RegisterTaskDefinition waits (in flight) until `register_release`, then goes on.
    hold_next_register: bool,
    /// The held listener write (`hold_next_set_weights`) takes effect when released.
    held_set_weights_lands: bool,
    register_held: bool,
    register_release: bool,
    /// Every DescribeServices fails (ECS throttling or an outage of its API).
    describe_fails: bool,
    /// Every listener read (DescribeRules) fails (an ELBv2 outage).
    weights_read_fails: bool,
    /// Every DescribeTargetHealth fails (throttled, or the role lost the permission).
    target_health_fails: bool,
}

type Shared = Arc<Mutex<Script>>;

fn lock(s: &Shared) -> MutexGuard<'_, Script> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

struct ScriptedEcs {
    inner: SimEcs,
    script: Shared,
}

impl EcsControl for ScriptedEcs {
    async fn service_tags(&self, cluster: &str, service: &str) -> PortResult<Tags> {
        self.inner.service_tags(cluster, service).await
    }

    async fn service(&self, cluster: &str, service: &str) -> PortResult<EcsService> {
        if lock(&self.script).describe_fails {
            return Err(PortError::remote(
                "ECS DescribeServices",
                "ThrottlingException: Rate exceeded",
            ));
        }
        self.inner.service(cluster, service).await
    }

    async fn stopped_tasks(
        &self,
        cluster: &str,
        service: &str,
    ) -> PortResult<Vec<flightdeck::ports::StoppedTaskView>> {
        self.inner.stopped_tasks(cluster, service).await
    }

    async fn register_revision(
        &self,
        task_definition: &str,
        container: &str,
        image: &str,
        deployment_id: &str,
        retry: bool,
    ) -> PortResult<String> {
        if lock(&self.script).register_hangs {
            loop {
                YieldOnce::default().await;
            }
        }
        let hold = std::mem::take(&mut lock(&self.script).hold_next_register);
        if hold {
            lock(&self.script).register_held = true;
            while !lock(&self.script).register_release {
                YieldOnce::default().await;
            }
        }
        if lock(&self.script).register_fails {
            YieldOnce::default().await;
            return Err(PortError::remote(
                "ECS RegisterTaskDefinition",
                "ClientException: Role is not valid (simulated)",
            ));
        }
        let lost = {
            let mut s = lock(&self.script);
            let lost = s.register_lost > 0;
            s.register_lost = s.register_lost.saturating_sub(1);
            lost
        };
        let result = self
            .inner
            .register_revision(task_definition, container, image, deployment_id, retry)
            .await;
        if lost && result.is_ok() {
            return Err(PortError::remote(
                "ECS RegisterTaskDefinition",
                "dispatch failure: the connection was reset after the request was sent",
            ));
        }
        result
    }

    async fn update_service(
        &self,
        cluster: &str,
        service: &str,
        task_definition: &str,
        desired_count: Option<u32>,
    ) -> PortResult<Option<String>> {
        let fault = lock(&self.script).update_service_faults.pop_front();
        match fault {
            Some("before") => Err(PortError::remote(
                "ECS UpdateService",
                "ThrottlingException: Rate exceeded",
            )),
            Some(_) => {
                let _ = self
                    .inner
                    .update_service(cluster, service, task_definition, desired_count)
                    .await;
                Err(PortError::remote(
                    "ECS UpdateService",
                    "dispatch failure: the connection was reset after the request was sent",
                ))
            }
            None => {
                self.inner
                    .update_service(cluster, service, task_definition, desired_count)
                    .await
            }
        }
    }

    async fn update_service_native(
        &self,
        cluster: &str,
        service: &str,
        task_definition: &str,
        strategy: &flightdeck::native::NativeStrategy,
    ) -> PortResult<Option<String>> {
        self.inner
            .update_service_native(cluster, service, task_definition, strategy)
            .await
    }

    async fn service_deployment(
        &self,
        arn: &str,
    ) -> PortResult<Option<flightdeck::ports::ServiceDeploymentView>> {
        self.inner.service_deployment(arn).await
    }

    async fn revision_task_definitions(
        &self,
        revision_arns: &[String],
    ) -> PortResult<Vec<(String, String)>> {
        self.inner.revision_task_definitions(revision_arns).await
    }

    async fn stop_service_deployment(&self, arn: &str) -> PortResult<()> {
        self.inner.stop_service_deployment(arn).await
    }

    async fn image_of(&self, task_definition: &str, container: &str) -> PortResult<Option<String>> {
        self.inner.image_of(task_definition, container).await
    }

    async fn scale(&self, cluster: &str, service: &str, desired_count: u32) -> PortResult<()> {
        let hang = std::mem::take(&mut lock(&self.script).scale_hangs);
        if hang {
            loop {
                YieldOnce::default().await;
            }
        }
        self.inner.scale(cluster, service, desired_count).await
    }
}

struct ScriptedTraffic {
    inner: SimTraffic,
    script: Shared,
}

impl TrafficControl for ScriptedTraffic {
    async fn weights(&self, listener: &Listener) -> PortResult<Vec<(String, u32)>> {
        if lock(&self.script).weights_read_fails {
            return Err(PortError::remote(
                "ELBv2 DescribeRules",
                "ThrottlingException: Rate exceeded",
            ));
        }
        self.inner.weights(listener).await
    }

    async fn set_weights(&self, listener: &Listener, weights: &[(String, u32)]) -> PortResult<()> {
        let hold = {
            let mut s = lock(&self.script);
            std::mem::take(&mut s.hold_next_set_weights)
        };
        if hold {
            lock(&self.script).held = true;
            loop {
                if lock(&self.script).release {
                    break;
                }
                YieldOnce::default().await;
            }
            if lock(&self.script).held_set_weights_lands {
                return self.inner.set_weights(listener, weights).await;
            }
            return Err(PortError::remote(
                "ELBv2 ModifyRule",
                "ThrottlingException: Rate exceeded",
            ));
        }
        let fault = lock(&self.script).set_weights_faults.pop_front();
        match fault {
            Some("before") => Err(PortError::remote(
                "ELBv2 ModifyRule",
                "ThrottlingException: Rate exceeded",
            )),
            Some(_) => {
                let _ = self.inner.set_weights(listener, weights).await;
                Err(PortError::remote(
                    "ELBv2 ModifyRule",
                    "dispatch failure: the connection was reset after the request was sent",
                ))
            }
            None => self.inner.set_weights(listener, weights).await,
        }
    }

    async fn resource_tags(&self, arn: &str) -> PortResult<Tags> {
        self.inner.resource_tags(arn).await
    }

    async fn healthy_targets(&self, target_group_arn: &str) -> PortResult<u32> {
        if lock(&self.script).target_health_fails {
            return Err(PortError::remote(
                "ELBv2 DescribeTargetHealth",
                "ThrottlingException: Rate exceeded",
            ));
        }
        self.inner.healthy_targets(target_group_arn).await
    }
}

// ---------------------------------------------------------------------------------------------
// The harness: one world, the real handlers, a hand-made schedule.

type P = Ports<Store, ScriptedEcs, ScriptedTraffic, Sns, SimClock, Images>;

struct H {
    sim: Sim,
    ports: P,
    alarms: Alarms,
    script: Shared,
    next_event: u64,
}

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("harness: a handler never finished");
}

/// Polls `f` once (one await point).
fn poll_once<T>(f: &mut Pin<Box<dyn Future<Output = T> + '_>>) -> Option<T> {
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fn image(repository: &str, digest: &str) -> String {
    format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repository}@{digest}")
}

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

impl H {
    fn new() -> H {
        let sim = Sim(Arc::new(Mutex::new(World::new(1, true))));
        let script: Shared = Arc::default();
        H {
            ports: Ports {
                store: Store(sim.clone()),
                ecs: ScriptedEcs {
                    inner: SimEcs(sim.clone()),
                    script: script.clone(),
                },
                traffic: ScriptedTraffic {
                    inner: SimTraffic(sim.clone()),
                    script: script.clone(),
                },
                notifier: Sns(sim.clone()),
                clock: SimClock(sim.clone()),
                images: Images(sim.clone()),
            },
            alarms: Alarms(sim.clone()),
            sim,
            script,
            next_event: 0,
        }
    }

    fn w(&self) -> MutexGuard<'_, World> {
        self.sim.lock()
    }

    /// A `rolling` service `api` in staging: `desired` tasks of revision api:1 running.
    fn rolling(desired: u32, extra_gates: &str) -> H {
        let h = H::new();
        {
            let mut w = h.w();
            let json = format!(
                r#"{{"cluster":"{CLUSTER}","repository":"api","container":"app",
                    "engine":{{"type":"rolling","service":"api"}},
                    "strategy":{{"type":"all-at-once","bake_minutes":0}},
                    "gates":{{"max_failed_tasks":3{extra_gates}}},
                    "deployers":["arn:aws:iam::{ACCOUNT}:role/ci-deployer"],
                    "approvers":["arn:aws:iam::{ACCOUNT}:role/release-approver"]}}"#
            );
            let reg = Registration::parse("api", "staging", &json).expect("registration");
            w.store
                .registrations
                .insert(("api".into(), "staging".into()), reg);
            let td = w
                .ecs
                .register("api", "app", &image("api", &digest('0')), None);
            w.ecs.create_service(CLUSTER, "api", &td, desired, None);
            let now = w.now;
            w.ecs.settle_initial(now);
        }
        h
    }

    /// An `alb-weights` pair `web` in staging: blue serves (100%) with `desired` tasks of
    /// web:1; green runs `green_desired` tasks of web:1 too (0 when its scale-down was done).
    fn alb(desired: u32, green_desired: u32, strategy: &str) -> H {
        let h = H::new();
        {
            let mut w = h.w();
            let json = format!(
                r#"{{"cluster":"{CLUSTER}","repository":"web","container":"app",
                    "engine":{{"type":"alb-weights","listener_rule_arn":"{RULE}",
                        "blue":{{"service":"web-blue","target_group_arn":"{TG_BLUE}"}},
                        "green":{{"service":"web-green","target_group_arn":"{TG_GREEN}"}},
                        "scale_down_after_minutes":5}},
                    "strategy":{strategy},
                    "gates":{{"alarms":["web-5xx"],"max_failed_tasks":3}},
                    "deployers":["arn:aws:iam::{ACCOUNT}:role/ci-deployer"],
                    "approvers":["arn:aws:iam::{ACCOUNT}:role/release-approver"]}}"#
            );
            let reg = Registration::parse("web", "staging", &json).expect("registration");
            w.store
                .registrations
                .insert(("web".into(), "staging".into()), reg);
            let td = w
                .ecs
                .register("web", "app", &image("web", &digest('0')), None);
            w.ecs
                .create_service(CLUSTER, "web-blue", &td, desired, Some(TG_BLUE.into()));
            w.ecs.create_service(
                CLUSTER,
                "web-green",
                &td,
                green_desired,
                Some(TG_GREEN.into()),
            );
            let actions = vec![
                RuleAction::AuthenticateOidc {
                    issuer: "https://idp.example.com".into(),
                    client_id: "web".into(),
                },
                RuleAction::Forward {
                    groups: vec![(TG_BLUE.into(), 100), (TG_GREEN.into(), 0)],
                    stickiness: Some(3600),
                },
            ];
            w.elb.rules.insert(RULE.into(), actions.clone());
            w.elb.initial.insert(RULE.into(), actions);
            w.elb
                .target_groups
                .insert(TG_BLUE.into(), "web-blue".into());
            w.elb
                .target_groups
                .insert(TG_GREEN.into(), "web-green".into());
            let now = w.now;
            w.ecs.settle_initial(now);
        }
        h
    }

    /// An `ecs-native` service `svc` in staging (gated by `svc-5xx`), running svc:1.
    fn native(desired: u32, strategy: &str) -> H {
        let h = H::new();
        {
            let mut w = h.w();
            let json = format!(
                r#"{{"cluster":"{CLUSTER}","repository":"svc","container":"app",
                    "engine":{{"type":"ecs-native","service":"svc"}},
                    "strategy":{strategy},
                    "gates":{{"alarms":["svc-5xx"],"max_failed_tasks":3}},
                    "deployers":["arn:aws:iam::{ACCOUNT}:role/ci-deployer"],
                    "approvers":["arn:aws:iam::{ACCOUNT}:role/release-approver"]}}"#
            );
            let reg = Registration::parse("svc", "staging", &json).expect("registration");
            w.store
                .registrations
                .insert(("svc".into(), "staging".into()), reg);
            let td = w
                .ecs
                .register("svc", "app", &image("svc", &digest('0')), None);
            w.ecs.create_service(CLUSTER, "svc", &td, desired, None);
            w.alarms.insert(
                "svc-5xx".into(),
                flightdeck_local::sim::world::Alarm {
                    name: "svc-5xx".into(),
                    state: "OK".into(),
                    reason: "Threshold Crossed".into(),
                    bad_since: None,
                    good_since: None,
                    registration: 0,
                },
            );
            let now = w.now;
            w.ecs.settle_initial(now);
        }
        h
    }

    /// Runs until ECS's service deployment `arn` waits for the hook; the hook's payload then.
    fn hook_due(&self, arn: &str, limit: i64) -> serde_json::Value {
        assert!(
            self.until(5, limit, false, |h| h
                .w()
                .ecs
                .service_deployments
                .get(arn)
                .is_some_and(|sd| sd.hook.is_some())),
            "harness: ECS never called the hook:\n{}",
            self.trace_tail(30)
        );
        let mut w = self.w();
        let now = w.now;
        let sd = w.ecs.service_deployments.get_mut(arn).expect("the rollout");
        let payload = flightdeck_local::sim::hook_payload(sd, now);
        // ECS invokes the hook: this execution's answer is the one it waits for.
        if let Some(hook) = sd.hook.as_mut() {
            hook.asked = payload["executionId"].as_str().map(str::to_string);
        }
        payload
    }

    fn event_id(&mut self) -> String {
        self.next_event += 1;
        format!("evt-review-{:04}", self.next_event)
    }

    /// The ECR push event of `repository:tag` (a good image); returns (event, deployment id).
    fn push_event(
        &mut self,
        repository: &str,
        service: &str,
        tag: &str,
        d: char,
    ) -> (serde_json::Value, String) {
        let id = self.event_id();
        let dg = digest(d);
        let mut w = self.w();
        w.ecs.quality.insert(dg.clone(), Quality::Good);
        let now = w.now;
        drop(w);
        let body = events::image_push(id.clone(), now, repository, &dg, tag);
        (body, push_deployment_id(service, "staging", &id))
    }

    /// Pushes `tag` (image `d`) of the ecs-native `svc`: the deployment's id and the service
    /// deployment its UpdateService started.
    fn push_native(&mut self, tag: &str, d: char) -> (String, String) {
        let (push, id) = self.push_event("svc", "svc", tag, d);
        self.handle_push(push);
        let arn = self
            .get(&id)
            .native
            .as_ref()
            .and_then(|n| n.service_deployment_arn.clone())
            .expect("bound to the service deployment UpdateService started");
        (id, arn)
    }

    fn handle_push(&self, body: serde_json::Value) {
        let r = block_on(on_image_push::handle(&self.ports, body));
        if let Err(e) = r {
            eprintln!("push handler: {e}");
        }
    }

    fn shifter(&self) {
        if let Err(e) = block_on(shifter::handle(&self.ports, &self.alarms)) {
            eprintln!("shifter: {e}");
        }
    }

    fn get(&self, id: &str) -> Deployment {
        self.w()
            .store
            .deployments
            .get(id)
            .cloned()
            .unwrap_or_else(|| panic!("no deployment {id}"))
    }

    fn percent_to(&self, tg: &str) -> u32 {
        self.w().elb.percent_to(RULE, tg)
    }

    /// Delivers every event on the bus, oldest first, to its handler.
    fn deliver(&self) {
        loop {
            let next = {
                let mut w = self.w();
                if w.bus.is_empty() {
                    None
                } else {
                    let i = (0..w.bus.len()).min_by_key(|&i| w.bus[i].seq).unwrap_or(0);
                    Some(w.bus.remove(i))
                }
            };
            let Some(e) = next else { return };
            let r = match e.target {
                Target::Ecs => block_on(on_ecs_event::handle(&self.ports, e.body)).map(|_| ()),
                Target::Alarm => block_on(on_alarm::handle(&self.ports, e.body)).map(|_| ()),
                Target::Push => block_on(on_image_push::handle(&self.ports, e.body)).map(|_| ()),
            };
            if let Err(err) = r {
                eprintln!("{}: {err}", e.label);
            }
        }
    }

    /// The gating alarm of `service` (`gating_alarm`) goes to ALARM
    /// now, delivered to `on-alarm` as event `id`.
    fn fire_alarm(&self, id: &str, service: &str) {
        let now = self.w().now;
        block_on(on_alarm::handle(
            &self.ports,
            alarm_event(id, now, "ALARM", service),
        ))
        .expect("alarm handled");
    }

    /// Drops every event on the bus (lost).
    fn lose_events(&self) {
        self.w().bus.clear();
    }

    /// Moves the clock by `secs`, lets ECS act, delivers its events (unless `lose`), and runs
    /// the shifter when a minute boundary is crossed (if `tick`).
    fn advance(&self, secs: i64, tick: bool, lose: bool) {
        let crossed = {
            let mut w = self.w();
            let before = w.now;
            w.now += Duration::seconds(secs);
            ecs::advance(&mut w);
            let minute = |t: chrono::DateTime<chrono::Utc>| t.timestamp() / 60;
            minute(before) != minute(w.now)
        };
        if lose {
            self.lose_events();
        } else {
            self.deliver();
        }
        if tick && crossed {
            self.shifter();
        }
    }

    /// Advances in `step`-second steps until `done` holds or `limit` seconds passed.
    fn until(&self, step: i64, limit: i64, tick: bool, done: impl Fn(&H) -> bool) -> bool {
        let mut passed = 0;
        while passed <= limit {
            if done(self) {
                return true;
            }
            self.advance(step, tick, false);
            passed += step;
        }
        done(self)
    }

    /// Pushes `tag` of `web` (alb-weights) and runs until its deployment is SHIFTING with
    /// `percent` on the new colour; its id.
    fn pushed_to_step(&mut self, tag: &str, percent: u8, limit: i64) -> String {
        let (push, id) = self.push_event("web", "web", tag, 'a');
        self.handle_push(push);
        assert!(
            self.until(5, limit, true, |h| {
                let d = h.get(&id);
                d.status() == Status::Shifting
                    && d.traffic_percent == percent
                    && d.progress().is_some_and(|p| p.bake_until.is_some())
            }),
            "harness: the deployment never got to {percent}%:\n{}",
            self.trace_tail(40)
        );
        id
    }

    fn trace_tail(&self, n: usize) -> String {
        let w = self.w();
        let lines: Vec<&String> = w
            .trace
            .full
            .as_ref()
            .map(|f| f.iter().collect())
            .unwrap_or_default();
        let skip = lines.len().saturating_sub(n);
        lines[skip..].iter().map(|l| format!("    {l}\n")).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Fencing and claims.

/// DESIGN.md, "Effects are fenced": an effect whose call failed releases its claim at once, so
/// a transient error delays a rollback by seconds, not by a lease. Here the weight step to 100%
/// is in flight when an alarm rolls the deployment back (the step is cancelled and holds its
/// lane, as designed); then the in-flight ModifyRule fails with a throttle. Its claim must be
/// released right then, and the rollback's weight change must run on the next invocation.
#[test]
fn a_cancelled_weight_step_whose_call_fails_releases_its_lane_at_once() {
    let mut h = H::alb(
        2,
        0,
        r#"{"type":"canary","steps":[10,100],"bake_minutes":1}"#,
    );
    let id = h.pushed_to_step("v2", 10, 900);
    // The bake ends; the shifter decides the step to 100% and its ModifyRule hangs in flight.
    let bake_until = h.get(&id).progress().and_then(|p| p.bake_until).unwrap();
    {
        let mut w = h.w();
        let to = bake_until + Duration::seconds(1);
        if w.now < to {
            w.now = to;
        }
    }
    lock(&h.script).hold_next_set_weights = true;
    let mut tick: Pin<Box<dyn Future<Output = _> + '_>> =
        Box::pin(shifter::handle(&h.ports, &h.alarms));
    let mut polls = 0;
    while !lock(&h.script).held {
        assert!(
            poll_once(&mut tick).is_none(),
            "harness: the shifter ended before the step"
        );
        polls += 1;
        assert!(polls < 10_000, "harness: the step never started");
    }
    // Meanwhile the alarm fires: the deployment rolls back.
    h.fire_alarm("evt-alarm-1", "web-green");
    assert_eq!(h.get(&id).status(), Status::RollingBack);
    // The in-flight ModifyRule fails (throttled); the shifter invocation ends.
    lock(&h.script).release = true;
    let mut n = 0;
    while poll_once(&mut tick).is_none() {
        n += 1;
        assert!(n < 100_000, "harness: the shifter never finished");
    }
    drop(tick);
    // Ten seconds later the next invocation runs (the next tick, or any event).
    h.w().now += Duration::seconds(10);
    h.shifter();
    let d = h.get(&id);
    let green = h.percent_to(TG_GREEN);
    assert_eq!(
        green,
        0,
        "10 s after the failed call, {green}% of traffic is still on the rolled-back green colour \
         (status {}, outbox {:?}): the cancelled step's claim was kept until its lease",
        d.status(),
        d.outbox
            .iter()
            .map(|e| (e.seq, e.effect.describe(), e.cancelled, e.claim.is_some()))
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// Traffic ownership and readiness.

/// DESIGN.md, "Gates / Readiness": traffic moves to the new revision only when that many
/// targets *of the new revision* are healthy. Back-to-back blue/green (issue 8, failure 1): the
/// previous deployment's scale-down of the idle colour was made moot by this one, so the idle
/// colour still runs the old revision, healthy. ECS (minimum healthy 100 %, behind a load
/// balancer) keeps those tasks until the new ones pass their health checks. With the new tasks
/// RUNNING but not yet healthy, the target group's healthy count is the old tasks': the
/// deployment must not take it for readiness and shift traffic.
#[test]
fn readiness_counts_only_healthy_targets_of_the_new_revision() {
    let mut h = H::alb(
        2,
        2,
        r#"{"type":"canary","steps":[10,100],"bake_minutes":1}"#,
    );
    let (push, id) = h.push_event("web", "web", "v2", 'b');
    h.handle_push(push);
    let d = h.get(&id);
    assert_eq!(d.status(), Status::Deploying, "{:?}", d.reason);
    let new_td = d.rollout.new_task_definition.clone().unwrap();
    // ECS starts the new revision's tasks: RUNNING, health checks not passed yet. The old
    // revision's two tasks on green are still registered and healthy.
    {
        let mut w = h.w();
        let now = w.now + Duration::seconds(20);
        w.now = now;
        let primary = w.ecs.services["web-green"].primary().unwrap().id.clone();
        for n in 0..2 {
            let arn = format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task/sim/new{n:028}");
            w.ecs.tasks.insert(
                arn.clone(),
                Task {
                    arn,
                    service: "web-green".into(),
                    task_definition: new_td.clone(),
                    deployment: primary.clone(),
                    status: TaskStatus::Running,
                    version: 3,
                    next_at: now + Duration::days(1),
                    quality: Quality::Good,
                    healthy_at: Some(now + Duration::minutes(5)),
                },
            );
        }
    }
    h.shifter();
    let d = h.get(&id);
    let now = h.w().now;
    let healthy_new = h.w().ecs.healthy("web-green", &new_td, now);
    let green = h.percent_to(TG_GREEN);
    assert!(
        green == 0 && d.status() == Status::Deploying,
        "{green}% of traffic sent to web-green, whose new-revision tasks are {healthy_new} of 2 \
         healthy (status {}: {:?})",
        d.status(),
        d.reason
    );
}

// ---------------------------------------------------------------------------------------------
// Rolling: the record tells the truth.

/// A rollout whose UpdateService took effect but whose answer was lost, then was throttled on
/// every retry, ends FAILED ("gave up on UpdateService") — while ECS runs the new revision and
/// nothing watches it (its crash loops are not counted, nothing rolls it back). A call that may
/// have taken effect cannot end the deployment as if nothing had changed.
#[test]
fn a_rollout_whose_update_service_landed_unanswered_is_not_left_running_unwatched() {
    let mut h = H::rolling(2, "");
    lock(&h.script).update_service_faults = VecDeque::from(vec![
        "lost", "before", "before", "before", "before", "before",
    ]);
    let (push, id) = h.push_event("api", "api", "v2", 'c');
    h.handle_push(push);
    let ended = h.until(10, 1800, true, |h| !h.get(&id).status().is_active());
    let d = h.get(&id);
    assert!(ended, "harness: still {} after 30 min", d.status());
    // A few more minutes: what runs now stays.
    for _ in 0..30 {
        h.advance(10, true, false);
    }
    let d = h.get(&id);
    let (serving, running, desired) = {
        let w = h.w();
        let s = &w.ecs.services["api"];
        let td = s.task_definition().to_string();
        (td.clone(), w.ecs.running("api", &td), s.desired)
    };
    let new = d.rollout.new_task_definition.clone().unwrap_or_default();
    assert!(
        serving != new,
        "deployment {} is {} ({:?}) while ECS service api runs its revision {} ({running} of \
         {desired} tasks) with nothing watching or rolling it back",
        d.id,
        d.status(),
        d.reason,
        ecs::short_td(&serving)
    );
}

/// ECS's circuit breaker (with rollback on, as most services run it) puts the service back on
/// the previous revision by itself; its SERVICE_DEPLOYMENT_FAILED is lost. The
/// SERVICE_STEADY_STATE that follows is the previous revision's: the deployment must not end
/// SUCCEEDED while the old revision serves (and promote the bad image onwards).
#[test]
fn a_steady_state_after_ecs_rolled_the_service_back_is_not_success() {
    let mut h = H::rolling(2, "");
    let (push, id) = h.push_event("api", "api", "v2", 'd');
    h.handle_push(push);
    let d = h.get(&id);
    assert_eq!(d.status(), Status::Deploying, "{:?}", d.reason);
    let previous = d.rollout.previous_task_definition.clone().unwrap();
    // ECS rolls back by itself (its FAILED event for our deployment is lost).
    {
        let mut w = h.w();
        w.now += Duration::seconds(60);
        w.ecs
            .update_service("api", &previous, None)
            .expect("ECS rollback");
    }
    h.lose_events();
    for _ in 0..12 {
        h.advance(5, false, false);
    }
    let d = h.get(&id);
    let serving = h.w().ecs.services["api"].task_definition().to_string();
    assert_ne!(
        d.status(),
        Status::Succeeded,
        "deployment is SUCCEEDED ({:?}) while ECS service api runs the previous revision {}",
        d.reason,
        ecs::short_td(&serving)
    );
}

// ---------------------------------------------------------------------------------------------
// One deployment at a time: newest wins.

/// DESIGN.md, "One active deployment per service and environment (a newer push supersedes a
/// waiting one)". Two pushes land while a deployment is in flight; the older one's handler is
/// between creating its record and queueing it when the newer one is handled, so the newer one
/// does not supersede it and both end up queued. When the in-flight one ends, the newer push's
/// redelivered event starts it first; the older push then queues behind it, and will deploy its
/// older image after it — the service ends on the older image.
#[test]
fn an_older_push_still_waiting_never_deploys_after_a_newer_one() {
    let mut h = H::rolling(1, "");
    let (push_a, a) = h.push_event("api", "api", "v1", 'e');
    h.handle_push(push_a);
    assert_eq!(h.get(&a).status(), Status::Deploying);

    let (push_b, b) = h.push_event("api", "api", "v2", 'f');
    h.w().now += Duration::seconds(5);
    let (push_c, c) = h.push_event("api", "api", "v3", '9');
    // B's handler creates its record, then is slow.
    let mut handle_b: Pin<Box<dyn Future<Output = _> + '_>> =
        Box::pin(on_image_push::handle(&h.ports, push_b));
    let mut polls = 0;
    while !h.w().store.deployments.contains_key(&b) {
        assert!(
            poll_once(&mut handle_b).is_none(),
            "harness: B's handler ended early"
        );
        polls += 1;
        assert!(polls < 1000);
    }
    // C's push is handled meanwhile, in full.
    h.w().now += Duration::seconds(1);
    h.handle_push(push_c.clone());
    // B's handler goes on.
    while poll_once(&mut handle_b).is_none() {}
    drop(handle_b);
    // A finishes (by ECS events; no tick yet).
    assert!(
        h.until(5, 600, false, |h| !h.get(&a).status().is_active()),
        "harness: A never ended"
    );
    // C's push event is delivered again (EventBridge delivers at least once); then a tick.
    h.handle_push(push_c);
    h.shifter();
    let (db, dc) = (h.get(&b), h.get(&c));
    assert_eq!(
        db.status(),
        Status::Superseded,
        "older push B is {} (queued behind {:?}) while newer push C is {}: B will deploy its \
         older image after C",
        db.status(),
        db.queued_behind(),
        dc.status()
    );
}

// ---------------------------------------------------------------------------------------------
// Gates.

/// Issue 8: "an alarm added to a registration mid-deployment is swallowed". The event path now
/// sees it; the reconcile loop (the source of truth when the event is lost) still checks only
/// the alarms copied into the record at creation, so with the ALARM event lost nothing rolls
/// the deployment back.
#[test]
fn the_reconcile_loop_checks_an_alarm_added_to_the_registration_mid_deployment() {
    let mut h = H::rolling(2, "");
    let (push, id) = h.push_event("api", "api", "v2", '7');
    h.handle_push(push);
    assert_eq!(h.get(&id).status(), Status::Deploying);
    {
        let mut w = h.w();
        let key = ("api".to_string(), "staging".to_string());
        let mut reg = w.store.registrations[&key].clone();
        reg.spec.gates.alarms.push("api-5xx".into());
        w.store.registrations.insert(key, reg);
        w.alarms.insert(
            "api-5xx".into(),
            Alarm {
                name: "api-5xx".into(),
                state: "ALARM".into(),
                reason: "Threshold Crossed: 1 datapoint [12.0] was greater than the threshold"
                    .into(),
                bad_since: None,
                good_since: None,
                registration: 0,
            },
        );
        w.now += Duration::seconds(61);
    }
    // The ALARM state-change event is lost; the reconcile loop runs.
    h.shifter();
    let d = h.get(&id);
    assert_eq!(
        d.status(),
        Status::RollingBack,
        "alarm api-5xx (now a gate of the registration) is in ALARM, yet the reconcile loop left \
         the deployment {}: {:?}",
        d.status(),
        d.reason
    );
}

// ---------------------------------------------------------------------------------------------
// Registrations.

/// Issue 8: "two registrations may claim the same ECS service" must end. The check reads every
/// registration, then writes without a condition on what it read: two registrations of one
/// ECS service sent at the same time are both accepted.
#[test]
fn two_concurrent_registrations_cannot_both_claim_one_ecs_service() {
    let h = H::new();
    let config = ApiConfig {
        admins: vec![ADMIN.to_string()],
        region: REGION.to_string(),
        ..ApiConfig::default()
    };
    let put = |service: &str| ApiRequest {
        method: "PUT".into(),
        path: format!("/services/{service}/staging"),
        caller: Some("arn:aws:sts::123456789012:assumed-role/platform-admin/ops".into()),
        account: Some(ACCOUNT.into()),
        body: Some(format!(
            r#"{{"cluster":"{CLUSTER}","repository":"{service}","container":"app",
                "engine":{{"type":"rolling","service":"shared-svc"}}}}"#
        )),
        ..ApiRequest::default()
    };
    let (first, second) = (put("api"), put("web"));
    let mut one: Pin<Box<dyn Future<Output = _> + '_>> =
        Box::pin(api::handle(&h.ports, &config, &first));
    // The first request reads the registrations (two await points: the call, its answer)…
    assert!(poll_once(&mut one).is_none());
    assert!(poll_once(&mut one).is_none());
    // …the second is handled in full…
    let r2 = block_on(api::handle(&h.ports, &config, &second));
    // …then the first goes on.
    let r1 = loop {
        if let Some(r) = poll_once(&mut one) {
            break r;
        }
    };
    let managing: Vec<String> = h
        .w()
        .store
        .registrations
        .values()
        .filter(|r| r.ecs_services().contains(&"shared-svc"))
        .map(|r| format!("{}/{}", r.service, r.environment))
        .collect();
    assert!(
        managing.len() <= 1,
        "ECS service shared-svc is managed by {managing:?} (answers {} and {})",
        r1.status,
        r2.status
    );
}

// ---------------------------------------------------------------------------------------------
// The reconcile loop keeps going.

/// CloudWatch throttling or unavailable.
struct FailingAlarms;

impl flightdeck::ports::AlarmReader for FailingAlarms {
    async fn states(&self, _names: &[String]) -> PortResult<Vec<flightdeck::ports::AlarmState>> {
        Err(PortError::remote(
            "CloudWatch DescribeAlarms",
            "ThrottlingException: Rate exceeded",
        ))
    }
}

impl flightdeck::ports::MetricsReader for FailingAlarms {
    async fn alb_minutes(
        &self,
        _load_balancer: &str,
        _canary: &str,
        _stable: &str,
        _from: chrono::DateTime<chrono::Utc>,
        _to: chrono::DateTime<chrono::Utc>,
    ) -> PortResult<flightdeck::judge::Samples> {
        Err(PortError::remote(
            "CloudWatch GetMetricData",
            "ThrottlingException: Rate exceeded",
        ))
    }
}

/// One gate's read failing must not stop the whole reconcile loop: with DescribeAlarms
/// throttled, a rollout past its progress deadline is still rolled back (a deadline, a bake, a
/// rollback's deadline do not depend on the alarms' state being readable). Today the shifter
/// reads every alarm first and returns on the error before it looks at any deployment, so
/// while CloudWatch is unavailable no deployment anywhere progresses, times out or ends.
#[test]
fn a_failing_describe_alarms_does_not_stop_progress_deadlines() {
    let mut h = H::rolling(2, r#","alarms":["api-5xx"]"#);
    let (push, id) = h.push_event("api", "api", "v2", '5');
    h.handle_push(push);
    let d = h.get(&id);
    assert_eq!(d.status(), Status::Deploying);
    // ECS never gets the new revision ready (no capacity); the deadline passes.
    let deadline = d.progress().map(|p| p.progress_deadline).unwrap();
    h.w().now = deadline + Duration::seconds(61);
    let result = block_on(shifter::handle(&h.ports, &FailingAlarms));
    let d = h.get(&id);
    assert_eq!(
        d.status(),
        Status::RollingBack,
        "the progress deadline passed {} s ago and the deployment is still {} (the reconcile \
         loop answered {:?})",
        (h.w().now - deadline).num_seconds(),
        d.status(),
        result.map(|_| ()).map_err(|e| e.to_string())
    );
}

// ---------------------------------------------------------------------------------------------
// Alerts that never come.

/// `alarm.fired` for an alarm on a managed service with nothing in flight: the handled-event
/// marker is written before the alert is published. When that conditional write lands but its
/// answer is lost, the SDK's retry (or Lambda's) finds the marker and takes the event for
/// handled: the alert is never published.
#[test]
fn an_alarm_fired_alert_comes_even_when_the_marker_write_lost_its_answer() {
    let h = H::rolling(2, r#","alarms":["api-5xx"]"#);
    let now = h.w().now;
    let alarm = events::alarm_state_change(&events::AlarmEvent {
        id: "evt-alarm-7".into(),
        at: now,
        alarm: "api-5xx",
        state: "ALARM",
        previous: "OK",
        reason: "Threshold Crossed: 1 datapoint [12.0] was greater than the threshold (5.0)",
        cluster: CLUSTER,
        service: "api",
    });
    // Every write of this invocation lands with its answer lost (reads are unaffected).
    h.w().faults.lost = 1.0;
    let first = block_on(on_alarm::handle(&h.ports, alarm.clone()));
    h.w().faults = Default::default();
    // Lambda retries a failed invocation.
    if first.is_err() {
        let _ = block_on(on_alarm::handle(&h.ports, alarm.clone()));
    }
    // And EventBridge may deliver it again anyway.
    let _ = block_on(on_alarm::handle(&h.ports, alarm));
    let fired = h
        .w()
        .sns
        .iter()
        .filter(|p| p.event_type == "alarm.fired")
        .count();
    assert!(
        fired >= 1,
        "alarm api-5xx went to ALARM on managed service api and alarm.fired was never published \
         (first invocation: {:?}; trace:\n{})",
        first.map(|o| o.skipped).map_err(|e| e.to_string()),
        h.trace_tail(12)
    );
}

// ---------------------------------------------------------------------------------------------
// Events handled twice.

/// EventBridge delivers at least once. A second delivery of the same "alarm back to OK" event
/// must change nothing (the fuzz target's own promise for every handler); today every delivery
/// appends another audit entry, stamped with the time of the delivery rather than the alarm's.
#[test]
fn a_redelivered_alarm_clearance_changes_nothing() {
    let mut h = H::rolling(2, r#","alarms":["api-5xx"]"#);
    let (push, id) = h.push_event("api", "api", "v2", '3');
    h.handle_push(push);
    assert_eq!(h.get(&id).status(), Status::Deploying);
    let now = h.w().now;
    let ok = events::alarm_state_change(&events::AlarmEvent {
        id: "evt-alarm-ok".into(),
        at: now,
        alarm: "api-5xx",
        state: "OK",
        previous: "INSUFFICIENT_DATA",
        reason: "Threshold Crossed: no datapoints were greater than the threshold",
        cluster: CLUSTER,
        service: "api",
    });
    block_on(on_alarm::handle(&h.ports, ok.clone())).expect("handled");
    let once = h.get(&id);
    h.w().now += Duration::seconds(30);
    block_on(on_alarm::handle(&h.ports, ok)).expect("handled");
    let twice = h.get(&id);
    assert_eq!(
        (twice.events_total, twice.record_version),
        (once.events_total, once.record_version),
        "a second delivery of the same alarm event changed the record: audit trail {:?}",
        twice
            .events
            .iter()
            .rev()
            .take(2)
            .map(|e| (e.at, e.reason.clone()))
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// One revision per deployment.

/// One revision per deployment, also after a lost answer. Registration finds an earlier attempt
/// only when it is the family's *newest* revision; a staging and a production registration of one
/// image often share a task-definition family, and the other environment's deployment registers
/// its revision in between (here: one push, both environments). The retry then registers a
/// second revision for the same deployment.
#[test]
fn a_lost_registration_answer_never_registers_a_second_revision_for_the_deployment() {
    let mut h = H::rolling(1, "");
    {
        let mut w = h.w();
        let json = format!(
            r#"{{"cluster":"{CLUSTER}","repository":"api","container":"app",
                "engine":{{"type":"rolling","service":"api-prod"}},
                "strategy":{{"type":"all-at-once","bake_minutes":0}}}}"#
        );
        let production = Registration::parse("api", "production", &json).expect("registration");
        w.store
            .registrations
            .insert(("api".into(), "production".into()), production);
        let td = staging_td(&w);
        w.ecs.create_service(CLUSTER, "api-prod", &td, 1, None);
        let now = w.now;
        w.ecs.settle_initial(now);
    }
    lock(&h.script).register_lost = 1;
    let (push, _) = h.push_event("api", "api", "v2", '2');
    h.handle_push(push);
    for _ in 0..30 {
        h.advance(10, true, false);
    }
    let w = h.w();
    let mut by_deployment: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (arn, td) in &w.ecs.task_definitions {
        if let Some(tag) = &td.deployment_tag {
            by_deployment
                .entry(tag.clone())
                .or_default()
                .push(ecs::short_td(arn).to_string());
        }
    }
    for (id, revisions) in &by_deployment {
        assert!(
            revisions.len() == 1,
            "deployment {id} registered {} revisions: {revisions:?} (all: {by_deployment:?})",
            revisions.len()
        );
    }
}

fn staging_td(w: &World) -> String {
    w.ecs.services["api"].task_definition().to_string()
}

// ---------------------------------------------------------------------------------------------
// Reconcile alone (every ECS event lost).

/// DESIGN.md: "bake_minutes is how long after ECS reports the new revision steady the gates
/// still apply before SUCCEEDED", and reconcile is the source of truth when events are lost.
/// A rolling revision that reaches steady state and then dies of OOM every minute or so during
/// its bake is never looked at by the reconcile loop while it bakes (it observes the service
/// only while DEPLOYING): with the task events lost, the crash loop ends SUCCEEDED.
#[test]
fn with_every_ecs_event_lost_a_rolling_revision_crashing_during_its_bake_does_not_succeed() {
    let mut h = H::new();
    {
        let mut w = h.w();
        let json = format!(
            r#"{{"cluster":"{CLUSTER}","repository":"api","container":"app",
                "engine":{{"type":"rolling","service":"api"}},
                "strategy":{{"type":"all-at-once","bake_minutes":5}},
                "gates":{{"max_failed_tasks":3}}}}"#
        );
        let reg = Registration::parse("api", "staging", &json).expect("registration");
        w.store
            .registrations
            .insert(("api".into(), "staging".into()), reg);
        let td = w
            .ecs
            .register("api", "app", &image("api", &digest('0')), None);
        w.ecs.create_service(CLUSTER, "api", &td, 2, None);
        let now = w.now;
        w.ecs.settle_initial(now);
    }
    let (push, id) = h.push_event("api", "api", "v2", '4');
    h.w().ecs.quality.insert(digest('4'), Quality::CrashOom);
    h.handle_push(push);
    let mut last = Status::Deploying;
    for _ in 0..(30 * 60 / 5) {
        // Every ECS event is lost; the shifter ticks every minute.
        h.advance(5, true, true);
        let d = h.get(&id);
        last = d.status();
        if !d.status().is_active() {
            break;
        }
    }
    let crashes = h
        .w()
        .trace
        .full
        .as_ref()
        .map(|t| t.iter().filter(|l| l.contains("OutOfMemory")).count())
        .unwrap_or(0);
    let d = h.get(&id);
    assert_ne!(
        last,
        Status::Succeeded,
        "the new revision's tasks died of OOM {crashes} times (limit 3), yet with the ECS events \
         lost the deployment ended SUCCEEDED: {:?}",
        d.reason
    );
}

/// Runs `f` for at most `polls` await points; `None` when it had not finished (Lambda's timeout
/// ended it).
fn run_or_time_out<F: Future>(f: F, polls: u32) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..polls {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return Some(v);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Deadlines.

/// DESIGN.md: "Every phase has a progress deadline". The start (registering the revision,
/// UpdateService) is claimed by an invocation; a call that hangs until Lambda's timeout never
/// counts as a failed attempt, so it is taken over after the lease and hangs again, forever:
/// the deployment stays PENDING holding its service's slot, and every later push queues
/// behind it (issue 8, failure 7, for the start).
#[test]
fn a_start_that_never_completes_ends_within_its_progress_deadline() {
    let mut h = H::rolling(1, "");
    lock(&h.script).register_hangs = true;
    let (push, id) = h.push_event("api", "api", "v2", '6');
    let _ = run_or_time_out(on_image_push::handle(&h.ports, push), 10_000);
    for _ in 0..(30 * 60 / 10) {
        let minute = {
            let mut w = h.w();
            let before = w.now.timestamp() / 60;
            w.now += Duration::seconds(10);
            ecs::advance(&mut w);
            before != w.now.timestamp() / 60
        };
        h.lose_events();
        if minute {
            let _ = run_or_time_out(shifter::handle(&h.ports, &h.alarms), 10_000);
        }
    }
    let d = h.get(&id);
    let (later_push, later) = h.push_event("api", "api", "v3", '8');
    let _ = run_or_time_out(on_image_push::handle(&h.ports, later_push), 10_000);
    let l = h.get(&later);
    assert!(
        !d.status().is_active(),
        "30 min after its push the deployment is still {} (outbox {:?}, attempts {:?}); a later \
         push is {} behind it",
        d.status(),
        d.outbox
            .iter()
            .map(|e| e.effect.describe())
            .collect::<Vec<_>>(),
        d.outbox.iter().map(|e| e.attempts).collect::<Vec<_>>(),
        l.status()
    );
}

/// A claim (and the stage item's scale lock) is taken over once its lease lapsed, on the
/// understanding that the invocation holding it is dead: Lambda ended it at its timeout. A
/// function whose timeout reached the lease could still be running the call when another
/// invocation takes it over, and both would carry it out.
#[test]
fn every_function_times_out_before_its_claims_can_lapse() {
    let path = flightdeck_local::repo_root().join("infra/template.yaml");
    let text = std::fs::read_to_string(&path).expect("infra/template.yaml");
    let template: serde_yaml::Value = serde_yaml::from_str(&text).expect("template is YAML");
    let seconds = |v: Option<&serde_yaml::Value>| v.and_then(serde_yaml::Value::as_i64);
    let global = seconds(template["Globals"]["Function"].get("Timeout"));
    let lease = flightdeck::outbox::CLAIM_LEASE.num_seconds();
    let mut functions = 0;
    for (name, resource) in template["Resources"]
        .as_mapping()
        .expect("template has Resources")
    {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        functions += 1;
        let timeout = seconds(resource["Properties"].get("Timeout"))
            .or(global)
            .unwrap_or(3);
        assert!(
            timeout < lease,
            "{name:?} may run {timeout} s, as long as or longer than the {lease} s claim lease"
        );
    }
    assert!(
        functions >= 5,
        "only {functions} functions found in the template"
    );
}

// ---------------------------------------------------------------------------------------------
// Second review (commits 9df6987..584eb9e).

/// The whole audit trail as stored (the record keeps only the recent entries).
fn full_audit(h: &H, id: &str) -> Vec<String> {
    h.w()
        .store
        .audit
        .get(id)
        .map(|events| events.iter().filter_map(|e| e.reason.clone()).collect())
        .unwrap_or_default()
}

fn audit(d: &Deployment) -> Vec<String> {
    d.events
        .iter()
        .filter_map(|e| e.reason.clone())
        .collect::<Vec<_>>()
}

/// An `alb-weights` pair whose first deployment (`A`, push `v2`) went blue -> green and
/// SUCCEEDED: green serves web:2, blue still runs web:1 at 2 tasks and is owed A's scale-down
/// `scale_down_after_minutes` (5) after A's success.
fn alb_after_one_success() -> (H, String) {
    let mut h = H::alb(
        2,
        0,
        r#"{"type":"canary","steps":[10,100],"bake_minutes":1}"#,
    );
    let (push, a) = h.push_event("web", "web", "v2", 'a');
    h.handle_push(push);
    assert!(
        h.until(5, 1800, true, |h| h.get(&a).status() == Status::Succeeded),
        "harness: A never succeeded ({}: {:?}):\n{}",
        h.get(&a).status(),
        h.get(&a).reason,
        h.trace_tail(40)
    );
    assert_eq!(h.percent_to(TG_GREEN), 100, "harness: green serves");
    assert_eq!(
        h.w().ecs.services["web-blue"].desired,
        2,
        "harness: blue idle"
    );
    (h, a)
}

// ---------------------------------------------------------------------------------------------
// 1. Giving up on a registration "that changed nothing".

/// `gave_up`: "registering the revision changed nothing ECS runs: the deployment ends FAILED".
/// For `alb-weights` it did change something: before RegisterTaskDefinition, the start takes
/// the idle colour on the stage item, which makes the previous deployment's owed scale-down of
/// that colour moot. The start then fails for good (RegisterTaskDefinition keeps failing) and
/// nothing gives the colour back: the idle colour keeps running the old revision at full count
/// for ever, and A's record says "a newer deployment put its revision on it" — none did.
/// DESIGN.md, "Traffic ownership": the scale-down is carried out while the colour "is still idle
/// and still runs the revision it was meant to retire".
#[test]
fn a_start_that_failed_before_registering_does_not_keep_the_old_colour_running() {
    let (mut h, a) = alb_after_one_success();
    let old_td = h.w().ecs.services["web-blue"].task_definition().to_string();
    lock(&h.script).register_fails = true;
    let (push, b) = h.push_event("web", "web", "v3", 'b');
    h.handle_push(push);
    assert!(
        h.until(10, 1800, true, |h| !h.get(&b).status().is_active()),
        "harness: B never ended"
    );
    let db = h.get(&b);
    assert_eq!(db.status(), Status::Failed, "harness: {:?}", db.reason);
    lock(&h.script).register_fails = false;
    // Well past A's scale-down (due 5 min after its success).
    for _ in 0..(15 * 6) {
        h.advance(10, true, false);
    }
    let (blue_desired, blue_running, blue_td) = {
        let w = h.w();
        let s = &w.ecs.services["web-blue"];
        (
            s.desired,
            w.ecs.running("web-blue", &old_td),
            s.task_definition().to_string(),
        )
    };
    let da = h.get(&a);
    assert!(
        blue_desired == 0,
        "idle colour web-blue still runs {blue_running} tasks of {} (desired {blue_desired}) \
         15 min after A's scale-down was due; B ended {} without ever putting anything on it \
         ({:?}); A's audit trail ends {:?}",
        ecs::short_td(&blue_td),
        db.status(),
        db.reason,
        audit(&da).iter().rev().take(2).collect::<Vec<_>>()
    );
}

/// `register_revision` waits for a scale-down of the idle colour in flight ("one in flight right
/// now is waited for") by failing the attempt with a "busy" error. A lock left by an invocation
/// that died in the scale call lasts the claim lease (90 s), but five failed attempts with the
/// outbox's backoff (5 + 10 + 20 + 40 s) take 75 s: a start that is merely waiting is given up
/// on as "a registration that never succeeded" and ends FAILED — a good image never deployed,
/// the record saying registering failed.
#[test]
fn a_start_waiting_for_a_dead_invocations_scale_lock_is_not_failed() {
    let (mut h, _a) = alb_after_one_success();
    // A's scale-down of blue comes due; the shifter takes the stage's scale lock and its
    // UpdateService never answers: Lambda ends the invocation at its timeout.
    let due = {
        let w = h.w();
        let d = w
            .store
            .deployments
            .values()
            .find(|d| d.status() == Status::Succeeded)
            .cloned()
            .unwrap();
        d.traffic.as_ref().unwrap().scale_down_at.unwrap()
    };
    {
        let mut w = h.w();
        if w.now < due {
            w.now = due + Duration::seconds(1);
        }
    }
    lock(&h.script).scale_hangs = true;
    let _ = run_or_time_out(shifter::handle(&h.ports, &h.alarms), 20_000);
    let locked = h.w().store.stages[&("web".to_string(), "staging".to_string())]
        .scaling
        .clone();
    assert!(locked.is_some(), "harness: no scale lock left behind");
    // B is pushed right then. Its start (and the few invocations that touch it over the next
    // 75 s: a redelivered push event here; ECS events of the pair do the same) find the idle
    // colour locked.
    let (push, b) = h.push_event("web", "web", "v3", 'b');
    h.handle_push(push.clone());
    for wait in [5, 10, 20, 40] {
        h.w().now += Duration::seconds(wait);
        h.handle_push(push.clone());
    }
    // Then time goes on normally: the lock expires, the shifter ticks.
    for _ in 0..(20 * 6) {
        h.advance(10, true, false);
        if !h.get(&b).status().is_active() {
            break;
        }
    }
    let db = h.get(&b);
    assert_ne!(
        db.status(),
        Status::Failed,
        "B ended FAILED while it was only waiting {} s for a dead invocation's scale lock: {:?}",
        outbox_lease(),
        db.reason
    );
}

fn outbox_lease() -> i64 {
    flightdeck::outbox::CLAIM_LEASE.num_seconds()
}

// ---------------------------------------------------------------------------------------------
// 2. Giving up on a rollback call that landed.

/// `gave_up`: "a rollback call that keeps failing ends the deployment FAILED, with the urgent
/// alert". The same reasoning the commit applies to a rollout call — any failed attempt may
/// have taken effect with its answer lost — is not applied to the rollback: the rolling
/// rollback's UpdateService lands with its answer lost, the retries are throttled, and the
/// deployment ends FAILED ("the previous revision may not be serving, look at the service
/// now") while ECS has been steady on the previous revision for minutes. The reconcile loop
/// (the source of truth) never looks: it observes a rolling rollback only once the record has
/// `issued_at`, which only the lost answer would have set, and `settled` ignores ECS's
/// SERVICE_DEPLOYMENT_COMPLETED of the rollback for the same reason.
#[test]
fn a_rollback_whose_update_service_landed_unanswered_ends_rolled_back_not_failed() {
    let mut h = H::rolling(2, r#","alarms":["api-5xx"]"#);
    let (push, id) = h.push_event("api", "api", "v2", 'c');
    h.handle_push(push);
    let d = h.get(&id);
    assert_eq!(d.status(), Status::Deploying, "harness: {:?}", d.reason);
    let previous = d.rollout.previous_task_definition.clone().unwrap();
    h.advance(20, false, false);
    // The rollback's UpdateService lands, its answer is lost; every retry is throttled.
    lock(&h.script).update_service_faults = VecDeque::from(vec![
        "lost", "before", "before", "before", "before", "before",
    ]);
    h.fire_alarm("evt-alarm-rb", "api");
    assert_eq!(h.get(&id).status(), Status::RollingBack, "harness");
    let ended = h.until(10, 1800, true, |h| !h.get(&id).status().is_active());
    let d = h.get(&id);
    assert!(ended, "harness: still {} after 30 min", d.status());
    let (serving, running, steady) = {
        let w = h.w();
        let s = w.ecs.describe("api").unwrap();
        (
            s.task_definition.clone(),
            s.running_of(&previous),
            s.steady_on(&previous),
        )
    };
    assert_eq!(
        serving, previous,
        "harness: ECS is back on the previous revision"
    );
    let failed_alerts = h
        .w()
        .sns
        .iter()
        .filter(|p| p.event_type.contains("failed") && p.deployment_id.as_deref() == Some(&id))
        .count();
    assert_eq!(
        d.status(),
        Status::RolledBack,
        "ECS service api is steady on the previous revision {} ({running} running, steady \
         {steady}), yet the deployment ended {} with {failed_alerts} urgent failure alert(s): {:?}",
        ecs::short_td(&previous),
        d.status(),
        d.reason
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Giving up after success: nobody is told (pure core).

/// DESIGN.md, "Effects are fenced": "an effect that keeps failing past a limit ends the
/// deployment FAILED with an alert that names the call and the error". `gave_up` keeps a
/// finished deployment's status — and then sends no alert at all: a promotion to production
/// that fails for good (say, DynamoDB keeps refusing the new record) is an audit entry on the
/// staging record and nothing else. The image is never promoted and no subscriber hears of it.
#[test]
fn a_promotion_given_up_on_after_success_is_alerted() {
    use chrono::TimeZone;
    use flightdeck::deployment::{Effect, ImagePush};
    use flightdeck::lifecycle::{Fact, decide};
    use flightdeck::outbox;
    let t = |s: i64| {
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
            .unwrap()
            + Duration::seconds(s)
    };
    let reg = Registration::parse(
        "api",
        "staging",
        r#"{"cluster":"prod","repository":"api","container":"app",
            "engine":{"type":"rolling","service":"api"},
            "strategy":{"type":"all-at-once","bake_minutes":0},
            "promote_to":"production"}"#,
    )
    .expect("registration");
    let push = ImagePush {
        registry: format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"),
        repository: "api".into(),
        digest: digest('e'),
        tag: Some("v2".into()),
        event_id: "evt-1".into(),
    };
    let seq_of = |d: &Deployment, f: &dyn Fn(&Effect) -> bool| {
        d.outbox
            .iter()
            .find(|e| f(&e.effect))
            .map(|e| e.seq)
            .unwrap()
    };
    let mut d = Deployment::from_push(&reg, &push, t(0));
    d = decide(&d, &Fact::SlotTaken, t(1)).deployment;
    let s = seq_of(&d, &|e| matches!(e, Effect::RegisterRevision));
    outbox::done(&mut d, s);
    let registered = Fact::RevisionRegistered {
        previous_task_definition: "arn:aws:ecs:eu-west-1:123456789012:task-definition/api:1".into(),
        new_task_definition: "arn:aws:ecs:eu-west-1:123456789012:task-definition/api:2".into(),
        desired_count: 2,
        stable: None,
        stable_owner: None,
    };
    d = decide(&d, &registered, t(2)).deployment;
    let s = seq_of(&d, &|e| matches!(e, Effect::Deploy { .. }));
    outbox::done(&mut d, s);
    d = decide(
        &d,
        &Fact::RolloutStarted {
            ecs_deployment_id: Some("ecs-svc/2".into()),
        },
        t(3),
    )
    .deployment;
    let steady = Fact::EcsDeployment {
        ecs_deployment_id: "ecs-svc/2".into(),
        event_name: "SERVICE_DEPLOYMENT_COMPLETED".into(),
        reason: None,
        at: t(60),
    };
    d = decide(&d, &steady, t(60)).deployment;
    assert_eq!(d.status(), Status::Succeeded, "harness: {:?}", d.reason);
    let promote = seq_of(&d, &|e| matches!(e, Effect::Promote { .. }));
    let alerts_before = d
        .outbox
        .iter()
        .filter(|e| matches!(e.effect, Effect::Alert(_)))
        .count();
    let error = "DynamoDB TransactWriteItems: ProvisionedThroughputExceededException";
    for n in 1..=outbox::MAX_ATTEMPTS {
        outbox::failed(&mut d, promote, error, t(60 + i64::from(n) * 60));
    }
    let fact = Fact::EffectGaveUp {
        seq: promote,
        error: error.into(),
    };
    let after = decide(&d, &fact, t(400)).deployment;
    let alerts_after = after
        .outbox
        .iter()
        .filter(|e| matches!(e.effect, Effect::Alert(_)))
        .count();
    assert!(
        alerts_after > alerts_before,
        "the promotion to production was given up on ({:?}) and no alert was queued",
        after.events.last().and_then(|e| e.reason.clone())
    );
    let Some(Effect::Alert(alert)) = after.outbox.last().map(|e| &e.effect) else {
        panic!("the last effect queued is not the alert");
    };
    assert_eq!(
        alert.document.event_type.as_str(),
        "deployment.follow_up_failed"
    );
    assert_eq!(
        after.status(),
        Status::Succeeded,
        "the deployment's own outcome stands"
    );
    let reason = alert.document.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("promot") && reason.contains("ProvisionedThroughputExceeded"),
        "the alert names the call and its error: {reason}"
    );
}

// ---------------------------------------------------------------------------------------------
// Seeds beyond the test command's range that the simulation itself finds failing.

fn seeds_keep_the_invariants(seeds: &[u64], options: &flightdeck_local::sim::Options) {
    let mut failing = String::new();
    for &seed in seeds {
        let report = flightdeck_local::sim::run_seed(seed, options);
        for v in &report.violations {
            failing.push_str(&format!(
                "seed {seed}: {} — {}\n",
                v.invariant.name(),
                v.detail
            ));
        }
    }
    assert!(failing.is_empty(), "{failing}");
}

/// A 20,000-seed run (seeds 4000..24000, `flightdeck-sim --seeds 20000 --from 4000 --list`)
/// finds seed 22070 (claim-released): an operator's abort cancels the start's RegisterRevision
/// while it is in flight, the call's answer is lost, and the failure is not recorded because
/// the effect is cancelled — the claim stays until its lease (the root cause of
/// `a_cancelled_weight_step_whose_call_fails_releases_its_lane_at_once`).
/// The 200,000-seed run finds seed 126675 (claim-released): the shifter's claim write on a
/// weight step lands with its answer lost, an abort cancels the step before the shifter
/// reloads, and the shifter leaves its own claim on the cancelled step it never started.
/// With ecs-native services in the scenarios, seeds 0..6000 found (terminal-truth) 1667: the
/// simulated ECS took a hook answer for a stage it had left as the answer to its rollback's
/// hook (`a_hook_answer_that_arrives_after_the_rollout_was_stopped_does_not_fail_ecs_rollback`);
/// 2579: ECS's ROLLBACK_SUCCESSFUL onto a revision an earlier rollout left crashing was taken
/// for ROLLED_BACK; 3099 and 4663: ECS's SUCCESSFUL while the new revision's tasks crash was
/// taken for SUCCEEDED (`ecs_success_is_success_only_once_the_new_revision_runs_at_its_desired_count`,
/// `ecs_rollback_success_onto_a_revision_that_does_not_run_is_not_rolled_back`). With the gates,
/// 577 and 1689 (one-deployment-at-a-time): an ecs-native watch rollback's UpdateService landed
/// with the invocation that made it stopped before it recorded the call; the hook took the
/// rollback's service deployment for a rollout started outside Flightdeck.
#[test]
fn seeds_found_in_review_keep_the_invariants() {
    seeds_keep_the_invariants(
        &[1667, 2579, 3099, 4663, 22070, 126675, 577, 1689],
        &flightdeck_local::sim::Options::default(),
    );
}

/// With every ECS event lost, seeds 0..5000 (the test command runs only 0..300) include
/// 1830 (traffic-health: a crash-looping canary holds 100% of the traffic through its bake,
/// because nothing but the end of a bake looks at the new colour's health when task events are
/// lost) and 2725 (deadline: a rolling rollback overruns its deadline while whole reconcile
/// ticks are lost to one failed DescribeAlarms or GetItem); 4312 (traffic-health: a push planned
/// the idle colour while the release before served, whose watch then rolled it back onto that
/// colour before the rollout call, which put the new revision on the colour taking all traffic)
/// and 1031 (the same schedule once the call reads the listener first).
#[test]
fn seeds_found_in_review_keep_the_invariants_with_every_ecs_event_lost() {
    let options = flightdeck_local::sim::Options {
        keep_trace: false,
        drop_ecs_events: true,
    };
    seeds_keep_the_invariants(&[1830, 2725, 4312, 1031], &options);
}

// ---------------------------------------------------------------------------------------------
// Third review (commits 584eb9e..d162df0 and the decision core around them).

/// The gating alarm of a service in these schedules.
fn gating_alarm(service: &str) -> &'static str {
    match service {
        "api" => "api-5xx",
        "svc" => "svc-5xx",
        _ => "web-5xx",
    }
}

fn alarm_event(
    id: &str,
    at: chrono::DateTime<chrono::Utc>,
    state: &str,
    service: &str,
) -> serde_json::Value {
    let (alarm, previous, reason) = if state == "ALARM" {
        (
            gating_alarm(service),
            "OK",
            "Threshold Crossed: 1 datapoint [12.0] was greater than the threshold (5.0)",
        )
    } else {
        (
            gating_alarm(service),
            "ALARM",
            "Threshold Crossed: no datapoints were greater than the threshold (5.0)",
        )
    };
    events::alarm_state_change(&events::AlarmEvent {
        id: id.into(),
        at,
        alarm,
        state,
        previous,
        reason,
        cluster: CLUSTER,
        service,
    })
}

/// README, "Delivery guarantees": "a rollback call keeps being retried, and the service seen on
/// the previous revision ends it ROLLED_BACK (its answer may have been lost)". The rolling
/// rollback's UpdateService lands with its answer lost; every retry is throttled until the
/// rollback deadline. ECS is steady on the previous revision within a minute, but the reconcile
/// loop never looks: `shifter::observe` reads a rolling rollback only once `issued_at` is set,
/// which only an answered call sets (the relaxed check in `rolling::observe` is never reached),
/// and `rolling::settled` ignores ECS's own word for the same reason. The deployment ends
/// FAILED with the urgent alert ("the previous revision may not be serving").
#[test]
fn a_rollback_that_landed_unanswered_ends_rolled_back_even_if_every_retry_fails() {
    let mut h = H::rolling(2, r#","alarms":["api-5xx"]"#);
    let (push, id) = h.push_event("api", "api", "v2", 'c');
    h.handle_push(push);
    let d = h.get(&id);
    assert_eq!(d.status(), Status::Deploying, "harness: {:?}", d.reason);
    let previous = d.rollout.previous_task_definition.clone().unwrap();
    h.advance(20, false, false);
    let mut faults = vec!["lost"];
    faults.extend(std::iter::repeat_n("before", 200));
    lock(&h.script).update_service_faults = VecDeque::from(faults);
    h.fire_alarm("evt-alarm-3a", "api");
    assert_eq!(h.get(&id).status(), Status::RollingBack, "harness");
    let ended = h.until(10, 1800, true, |h| !h.get(&id).status().is_active());
    let d = h.get(&id);
    assert!(ended, "harness: still {} after 30 min", d.status());
    let (serving, running, steady) = {
        let w = h.w();
        let s = w.ecs.describe("api").unwrap();
        (
            s.task_definition.clone(),
            s.running_of(&previous),
            s.steady_on(&previous),
        )
    };
    assert_eq!(serving, previous, "harness: the first call landed");
    assert_eq!(
        d.status(),
        Status::RolledBack,
        "ECS service api has been steady on the previous revision {} ({running} running, steady \
         {steady}) since the first rollback call landed, yet the deployment ended {}: {:?}",
        ecs::short_td(&previous),
        d.status(),
        d.reason
    );
}

/// The same for `alb-weights`: the rollback's ModifyRule puts 100% back on the stable colour
/// with its answer lost, and every retry is throttled until the rollback deadline. Nothing reads
/// the listener during ROLLING_BACK (DESIGN.md: "every active deployment converges from what the
/// reconcile loop can observe (... DescribeRules ...)"): the deployment ends FAILED, "the
/// previous revision may not be serving", while all traffic has been on the stable colour for
/// ten minutes; and the rolled-back colour is never scaled in.
#[test]
fn an_alb_rollback_whose_weights_landed_unanswered_ends_rolled_back_even_if_every_retry_fails() {
    let mut h = H::alb(
        2,
        0,
        r#"{"type":"canary","steps":[10,100],"bake_minutes":5}"#,
    );
    let id = h.pushed_to_step("v2", 10, 900);
    let mut faults = vec!["lost"];
    faults.extend(std::iter::repeat_n("before", 200));
    lock(&h.script).set_weights_faults = VecDeque::from(faults);
    h.fire_alarm("evt-alarm-3b", "web-green");
    assert_eq!(h.get(&id).status(), Status::RollingBack, "harness");
    let ended = h.until(10, 1800, true, |h| !h.get(&id).status().is_active());
    let d = h.get(&id);
    assert!(ended, "harness: still {} after 30 min", d.status());
    assert_eq!(h.percent_to(TG_GREEN), 0, "harness: the first call landed");
    assert_eq!(
        d.status(),
        Status::RolledBack,
        "all traffic has been back on the stable blue colour since the first rollback call \
         landed, yet the deployment ended {}: {:?}",
        d.status(),
        d.reason
    );
}

/// DESIGN.md, "Traffic ownership": the old colour's delayed scale-down "is carried out only while
/// that colour is still idle and still runs the revision it was meant to retire; a newer
/// deployment that takes the idle colour cancels it first". The start now takes the idle colour
/// after RegisterTaskDefinition, but `register_revision` does not look at the record again:
/// B is aborted (API `abort`) while its registration is in flight, the abort ends it ABORTED
/// ("nothing had been put on ECS yet"), and the call in flight then takes the idle colour for
/// the aborted B anyway (its result is dropped as stale). Nothing ever puts anything on that
/// colour, yet A's scale-down is found moot: the idle colour runs A's retired revision at full
/// count for ever, and A's audit trail says a newer deployment put its revision on it.
#[test]
fn a_start_aborted_during_its_registration_does_not_keep_the_old_colour_running() {
    use flightdeck::lifecycle::Fact;
    let (mut h, a) = alb_after_one_success();
    lock(&h.script).hold_next_register = true;
    let (push, b) = h.push_event("web", "web", "v3", 'b');
    let mut handle_b: Pin<Box<dyn Future<Output = _> + '_>> =
        Box::pin(on_image_push::handle(&h.ports, push));
    let mut polls = 0;
    while !lock(&h.script).register_held {
        assert!(
            poll_once(&mut handle_b).is_none(),
            "harness: B's handler ended before its registration"
        );
        polls += 1;
        assert!(polls < 10_000, "harness: the registration never started");
    }
    // An operator aborts B meanwhile.
    let stop = Fact::Stopped {
        by: ADMIN.to_string(),
        abort: true,
    };
    block_on(flightdeck::handlers::apply(&h.ports, &b, &stop)).expect("abort");
    assert_eq!(h.get(&b).status(), Status::Aborted, "harness");
    // The registration in flight goes on.
    lock(&h.script).register_release = true;
    while poll_once(&mut handle_b).is_none() {}
    drop(handle_b);
    // Well past A's scale-down (due 5 min after its success).
    for _ in 0..(15 * 6) {
        h.advance(10, true, false);
    }
    let (blue_desired, blue_td) = {
        let w = h.w();
        let s = &w.ecs.services["web-blue"];
        (s.desired, s.task_definition().to_string())
    };
    let da = h.get(&a);
    let owner = h.w().store.stages[&("web".to_string(), "staging".to_string())]
        .blue_owner
        .clone();
    assert!(
        blue_desired == 0,
        "idle colour web-blue still runs {blue_desired} tasks of A's retired {} 15 min after A's \
         scale-down was due; the stage names the aborted {owner:?} as its owner, and A's audit \
         trail ends {:?}",
        ecs::short_td(&blue_td),
        audit(&da).iter().rev().take(2).collect::<Vec<_>>()
    );
}

/// EventBridge "delivers at least once and out of order; Flightdeck is safe either way". An
/// alarm that gates the service fired and cleared before B was pushed (its ALARM event was
/// handled: `alarm.fired`); Lambda's retry of that invocation, or EventBridge's redelivery, brings
/// the same ALARM event again while B deploys. `Fact::AlarmFired` carries no time and the
/// alarm's state is not read: B, healthy with its alarm OK, is rolled back, its record saying
/// "alarm `api-5xx` is in ALARM".
#[test]
fn an_alarm_event_from_before_the_deployment_does_not_roll_it_back() {
    let mut h = H::rolling(2, r#","alarms":["api-5xx"]"#);
    let fired_at = h.w().now;
    h.w().alarms.insert(
        "api-5xx".into(),
        Alarm {
            name: "api-5xx".into(),
            state: "OK".into(),
            reason: "Threshold Crossed: no datapoints were greater than the threshold".into(),
            bad_since: None,
            good_since: None,
            registration: 0,
        },
    );
    let fired = alarm_event("evt-alarm-3d", fired_at, "ALARM", "api");
    let _ = block_on(on_alarm::handle(&h.ports, fired.clone()));
    h.w().now += Duration::seconds(60);
    let cleared_at = h.w().now;
    let _ = block_on(on_alarm::handle(
        &h.ports,
        alarm_event("evt-alarm-3e", cleared_at, "OK", "api"),
    ));
    h.w().now += Duration::seconds(60);
    let (push, id) = h.push_event("api", "api", "v2", 'd');
    h.handle_push(push);
    assert_eq!(h.get(&id).status(), Status::Deploying, "harness");
    h.advance(20, false, false);
    // The ALARM event of two minutes ago comes again.
    let _ = block_on(on_alarm::handle(&h.ports, fired));
    let d = h.get(&id);
    assert!(
        matches!(
            d.status(),
            Status::Deploying | Status::Shifting | Status::Succeeded
        ),
        "alarm api-5xx fired at {fired_at} and cleared at {cleared_at}, before deployment {} was \
         created; its redelivered ALARM event left the deployment {}: {:?}",
        d.id,
        d.status(),
        d.reason
    );
}

/// DESIGN.md, "How correctness is shown": "one deployment per service and environment touches
/// ECS or the listener", and "traffic never goes to a colour without enough healthy tasks of the
/// intended revision". A's rollback (alb-weights, at 100% on green) is throttled until its
/// deadline; the deadline tick ends A FAILED while a retry of its ModifyRule is in flight in
/// another invocation (it is cancelled and "holds its lane", but A no longer holds the slot:
/// `start` looks only at A's status). B is pushed right then: it reads green as the live colour
/// and puts its new revision on blue. A's call in flight then lands: 100% of the traffic goes to
/// blue, the colour B is rolling its untested revision onto, while B is DEPLOYING.
#[test]
fn a_failed_rollback_call_still_in_flight_never_moves_the_next_deployments_traffic() {
    let mut h = H::alb(
        2,
        0,
        r#"{"type":"canary","steps":[10,100],"bake_minutes":1}"#,
    );
    let a = h.pushed_to_step("v2", 100, 1200);
    lock(&h.script).set_weights_faults = VecDeque::from(vec!["before"; 500]);
    h.fire_alarm("evt-alarm-3f", "web-green");
    let deadline = h.get(&a).rollback().and_then(|r| r.deadline).unwrap();
    // Retries are throttled until shortly before the deadline; the last one before it is due
    // at most 30 s before the deadline (a tick of the reconcile loop runs it).
    let due = |h: &H| {
        h.get(&a)
            .outbox
            .iter()
            .find(|e| matches!(e.effect, flightdeck::deployment::Effect::SetWeights { .. }))
            .and_then(|e| e.retry_at)
            .is_some_and(|at| at <= h.w().now)
    };
    loop {
        h.advance(5, false, false);
        let now = h.w().now;
        if !due(&h) {
            continue;
        }
        if now + Duration::seconds(120) < deadline {
            h.shifter();
        } else if now >= deadline - Duration::seconds(30) {
            break;
        }
    }
    assert_eq!(h.get(&a).status(), Status::RollingBack, "harness");
    lock(&h.script).set_weights_faults.clear();
    {
        let mut s = lock(&h.script);
        s.hold_next_set_weights = true;
        s.held_set_weights_lands = true;
    }
    let (push_b, b) = h.push_event("web", "web", "v3", 'b');
    // An invocation claims the retry; its ModifyRule is in flight.
    let mut x: Pin<Box<dyn Future<Output = _> + '_>> =
        Box::pin(shifter::handle(&h.ports, &h.alarms));
    let mut polls = 0;
    while !lock(&h.script).held {
        assert!(
            poll_once(&mut x).is_none(),
            "harness: X ended before the call"
        );
        polls += 1;
        assert!(polls < 10_000, "harness: the retry never started");
    }
    // The deadline passes; the next tick ends A FAILED.
    {
        let mut w = h.w();
        if w.now < deadline {
            w.now = deadline + Duration::seconds(1);
        }
    }
    h.shifter();
    assert_eq!(h.get(&a).status(), Status::Failed, "harness");
    // B is pushed right then: it waits while A's call may still land.
    h.handle_push(push_b);
    let queued = h.get(&b);
    assert_eq!(
        queued.status(),
        Status::Pending,
        "B started while A's rollback call was still in flight: {:?}",
        queued.reason
    );
    // A's call lands; B goes ahead from what the listener says after it.
    lock(&h.script).release = true;
    while poll_once(&mut x).is_none() {}
    drop(x);
    assert!(
        h.until(5, 600, true, |h| h.get(&b).status() != Status::Pending),
        "B never started after A's call ended"
    );
    let db = h.get(&b);
    assert_eq!(db.status(), Status::Deploying, "{:?}", db.reason);
    let b_colour_tg = if db.rollout.ecs_service == "web-blue" {
        TG_BLUE
    } else {
        TG_GREEN
    };
    let on_b = h.percent_to(b_colour_tg);
    assert_eq!(
        on_b,
        0,
        "{on_b}% of the traffic is on {}, where B (still {}) is rolling out its untested \
         revision: A's rollback call, in flight when A ended FAILED, landed after B started",
        db.rollout.ecs_service,
        db.status()
    );
}

/// The end-of-bake gate of `alb-weights` ("the new colour healthy at its desired count") is
/// read only by the reconcile loop (`shifter::reconcile` observes the service when a bake is
/// over, then ticks); `Fact::Tick` itself decides the bake on whatever the record last observed.
/// Other paths apply a Tick without that read: `start` does, for a deployment already past
/// PENDING, on a redelivered push event. Here every target of the green colour fails its
/// health checks during the final (100%) step's bake; the push event is redelivered right after
/// the bake ends: the deployment ends SUCCEEDED ("every gate green") on the observation from the
/// previous step, with no healthy target behind 100% of the traffic.
#[test]
fn a_tick_from_a_redelivered_push_does_not_pass_a_bake_on_a_stale_observation() {
    let mut h = H::alb(
        2,
        0,
        r#"{"type":"canary","steps":[10,100],"bake_minutes":1}"#,
    );
    let (push, a) = h.push_event("web", "web", "v2", 'a');
    h.handle_push(push.clone());
    assert!(
        h.until(5, 1200, true, |h| {
            let d = h.get(&a);
            d.status() == Status::Shifting
                && d.traffic_percent == 100
                && d.progress().is_some_and(|p| p.bake_until.is_some())
        }),
        "harness: A never got to 100%:\n{}",
        h.trace_tail(40)
    );
    let bake_until = h.get(&a).progress().and_then(|p| p.bake_until).unwrap();
    // Green's targets start failing their health checks (the tasks keep running).
    {
        let mut w = h.w();
        for t in w.ecs.tasks.values_mut() {
            if t.service == "web-green" && t.status == TaskStatus::Running {
                t.healthy_at = None;
            }
        }
        if w.now <= bake_until {
            w.now = bake_until + Duration::seconds(1);
        }
    }
    let new_td = h.get(&a).rollout.new_task_definition.clone().unwrap();
    let now = h.w().now;
    let healthy = h.w().ecs.healthy("web-green", &new_td, now);
    assert_eq!(healthy, 0, "harness");
    // The push event comes again (EventBridge delivers at least once) before the next tick.
    h.handle_push(push);
    let d = h.get(&a);
    assert_ne!(
        d.status(),
        Status::Succeeded,
        "A ended SUCCEEDED ({:?}) with {healthy} healthy targets of 2 behind {}% of the traffic",
        d.reason,
        h.percent_to(TG_GREEN)
    );
}

// ---------------------------------------------------------------------------------------------
// Fourth review (commits d162df0, 854ecfb, 2557a36).

/// Alerts of `event_type` published for deployment `id`.
fn published(h: &H, id: &str, event_type: &str) -> usize {
    h.w()
        .sns
        .iter()
        .filter(|p| p.event_type == event_type && p.deployment_id.as_deref() == Some(id))
        .count()
}

/// DESIGN.md, "Core idea": "a rollback that does not complete in time ends FAILED with an urgent
/// alert saying exactly what was observed". The reconcile loop now reads the listener before
/// the rollback's Tick (`shifter::canary_weight`, added by 2557a36) and returns on its error, so
/// the Tick that checks the rollback deadline never runs while the read fails. An ELBv2 outage
/// (every ModifyRule and every DescribeRules throttled) during an alb rollback: the deployment
/// stays ROLLING_BACK for ever, with traffic still on the rolled-back colour, and no
/// `deployment.failed` is ever sent. (Before 2557a36 nothing was read: the deadline fired.)
#[test]
fn an_alb_rollback_whose_listener_cannot_be_read_still_fails_at_its_deadline() {
    let mut h = H::alb(
        2,
        0,
        r#"{"type":"canary","steps":[10,100],"bake_minutes":5}"#,
    );
    let id = h.pushed_to_step("v2", 10, 900);
    // ELBv2 is down: writes and reads are throttled.
    {
        let mut s = lock(&h.script);
        s.set_weights_faults = VecDeque::from(vec!["before"; 500]);
        s.weights_read_fails = true;
        s.target_health_fails = true;
    }
    h.fire_alarm("evt-alarm-4a", "web-green");
    let deadline = h.get(&id).rollback().and_then(|r| r.deadline).unwrap();
    assert_eq!(h.get(&id).status(), Status::RollingBack, "harness");
    // Twenty minutes past the rollback deadline.
    h.until(10, 1800, true, |h| !h.get(&id).status().is_active());
    let d = h.get(&id);
    let now = h.w().now;
    assert!(
        d.status() == Status::Failed && published(&h, &id, "deployment.failed") > 0,
        "{} min past its rollback deadline the deployment is {} ({:?}), {}% of the traffic is \
         still on the rolled-back green colour, and {} deployment.failed alert(s) were sent",
        (now - deadline).num_minutes(),
        d.status(),
        d.reason,
        h.percent_to(TG_GREEN),
        published(&h, &id, "deployment.failed")
    );
}

/// The same for `rolling`: `shifter::observe` now reads the service during every rolling
/// rollback (not only once the call was answered), and a failing DescribeServices returns
/// before the Tick. An ECS API outage (UpdateService and DescribeServices throttled) during
/// the rollback: ROLLING_BACK for ever, the new revision serving, no urgent alert.
#[test]
fn a_rolling_rollback_whose_service_cannot_be_read_still_fails_at_its_deadline() {
    let mut h = H::rolling(2, r#","alarms":["api-5xx"]"#);
    let (push, id) = h.push_event("api", "api", "v2", 'c');
    h.handle_push(push);
    assert_eq!(h.get(&id).status(), Status::Deploying, "harness");
    h.advance(20, false, false);
    {
        let mut s = lock(&h.script);
        s.update_service_faults = VecDeque::from(vec!["before"; 500]);
        s.describe_fails = true;
    }
    h.fire_alarm("evt-alarm-4b", "api");
    assert_eq!(h.get(&id).status(), Status::RollingBack, "harness");
    let deadline = h.get(&id).rollback().and_then(|r| r.deadline).unwrap();
    h.until(10, 1800, true, |h| !h.get(&id).status().is_active());
    let d = h.get(&id);
    let now = h.w().now;
    let serving = h.w().ecs.services["api"].task_definition().to_string();
    assert!(
        d.status() == Status::Failed && published(&h, &id, "deployment.failed") > 0,
        "{} min past its rollback deadline the deployment is {} ({:?}) while ECS service api \
         runs {}; {} deployment.failed alert(s) were sent",
        (now - deadline).num_minutes(),
        d.status(),
        d.reason,
        ecs::short_td(&serving),
        published(&h, &id, "deployment.failed")
    );
}

/// 2557a36: an alb bake is judged only by `observe` after it (`AlbWeights::bake_over` does
/// nothing), and SHIFTING has no deadline. When the end-of-bake look keeps failing (here
/// DescribeTargetHealth is throttled, or the role lost the permission), the deployment holds
/// its partial traffic split in SHIFTING for ever: no rollback, no alert, and the service and
/// environment's slot is never given up (every later push queues behind it).
#[test]
fn an_alb_bake_whose_end_cannot_be_read_does_not_hold_the_deployment_for_ever() {
    let mut h = H::alb(
        2,
        0,
        r#"{"type":"canary","steps":[10,100],"bake_minutes":1}"#,
    );
    let id = h.pushed_to_step("v2", 10, 900);
    let bake_until = h.get(&id).progress().and_then(|p| p.bake_until).unwrap();
    lock(&h.script).target_health_fails = true;
    // An hour.
    for _ in 0..360 {
        h.advance(10, true, false);
    }
    let d = h.get(&id);
    let now = h.w().now;
    let alerts: Vec<String> = h
        .w()
        .sns
        .iter()
        .filter(|p| p.deployment_id.as_deref() == Some(id.as_str()))
        .map(|p| p.event_type.clone())
        .collect();
    assert_ne!(
        d.status(),
        Status::Shifting,
        "{} min after its 1-min bake ended the deployment is still SHIFTING at {}% ({:?}); \
         alerts sent: {alerts:?}",
        (now - bake_until).num_minutes(),
        h.percent_to(TG_GREEN),
        d.reason
    );
}

/// 854ecfb moves the rollout's progress deadline, settle time and bake end out of `rollout`
/// into the phase (`State::Deploying(Progress)`, flattened under `status`) and refuses a
/// DEPLOYING or SHIFTING record without them. A record the previous version stored while a
/// deployment was in flight has them under `rollout` (and `finished_at`, `rollback`,
/// `queued_behind` at the top level): after an upgrade of Flightdeck it no longer reads. The
/// store answers `CorruptRecord` for it: the reconcile loop skips it every minute (no deadline,
/// no rollback, no alert), every event for it fails, and every later push of the service and
/// environment fails in `start` reading it. The fuzz seeds were rewritten to the new shape
/// instead of kept as the stored format of the version before.
#[test]
fn a_deployment_stored_in_flight_by_the_previous_version_is_still_read_after_an_upgrade() {
    let current: serde_json::Value = serde_json::from_str(include_str!(
        "../fuzz/seeds/deployment_record/checkout-api.staging.4-after-2.json"
    ))
    .expect("seed");
    assert_eq!(current["status"], "DEPLOYING", "harness");
    // The same record as the version before 854ecfb stored it.
    let mut old = current.clone();
    let top = old.as_object_mut().unwrap();
    let deadline = top.remove("progress_deadline").unwrap();
    let settled = top.remove("settled_at").unwrap_or(serde_json::Value::Null);
    let bake = top.remove("bake_until").unwrap_or(serde_json::Value::Null);
    top.insert("finished_at".into(), serde_json::Value::Null);
    top.insert("rollback".into(), serde_json::Value::Null);
    top.insert("queued_behind".into(), serde_json::Value::Null);
    let rollout = top["rollout"].as_object_mut().unwrap();
    rollout.insert("settled_at".into(), settled);
    rollout.insert("bake_until".into(), bake);
    rollout.insert("progress_deadline".into(), deadline);
    let read = serde_json::from_value::<Deployment>(old);
    assert!(
        read.is_ok(),
        "a DEPLOYING record stored by the version before the phase-typed state is refused: {}",
        read.err().map(|e| e.to_string()).unwrap_or_default()
    );
}

// ---------------------------------------------------------------------------------------------
// Promotions whose start fails.

/// A promotion is done once the next environment's record exists: the reconcile loop starts a
/// PENDING deployment too. When starting it right away fails (here the active-deployments
/// query of DynamoDB is throttled for ten minutes), the staging deployment must not give the
/// promotion up with `deployment.follow_up_failed` while the production deployment exists and
/// goes on to deploy: the alert would say the image was never promoted.
#[test]
fn a_promotion_whose_start_fails_is_not_reported_given_up_while_it_deploys() {
    let h = H::rolling(2, "");
    {
        let mut w = h.w();
        let key = ("api".to_string(), "staging".to_string());
        if let Some(reg) = w.store.registrations.get_mut(&key) {
            reg.spec.promote_to = Some("production".into());
        }
        let json = format!(
            r#"{{"cluster":"{CLUSTER}","repository":"api","container":"app",
                "engine":{{"type":"rolling","service":"api-prod"}},
                "strategy":{{"type":"all-at-once","bake_minutes":0}},
                "gates":{{"max_failed_tasks":3}},
                "deployers":["arn:aws:iam::{ACCOUNT}:role/ci-deployer"]}}"#
        );
        let reg = Registration::parse("api", "production", &json).expect("registration");
        w.store
            .registrations
            .insert(("api".into(), "production".into()), reg);
        let td = w
            .ecs
            .register("api", "app", &image("api", &digest('0')), None);
        w.ecs.create_service(CLUSTER, "api-prod", &td, 2, None);
        let now = w.now;
        w.ecs.settle_initial(now);
    }
    let mut h = h;
    let (push, staging) = h.push_event("api", "api", "v2", 'c');
    h.handle_push(push);
    assert_eq!(h.get(&staging).status(), Status::Deploying, "harness");
    // From now on, for ten minutes, every query of a service's active deployments fails.
    h.w().failing.push("DynamoDB Query active");
    let promoted = |h: &H| {
        h.w()
            .store
            .deployments
            .values()
            .find(|d| d.environment == "production")
            .cloned()
    };
    assert!(
        h.until(10, 600, true, |h| promoted(h).is_some()),
        "harness: staging never promoted ({})",
        h.get(&staging).status()
    );
    h.until(10, 600, true, |_| false);
    h.w().failing.clear();
    assert!(
        h.until(10, 600, true, |h| promoted(h)
            .is_some_and(|p| p.status() != Status::Pending)),
        "the promoted deployment never started once DynamoDB answered again"
    );
    let given_up: Vec<String> = h
        .w()
        .sns
        .iter()
        .filter(|p| p.event_type == "deployment.follow_up_failed")
        .map(|p| format!("{:?}", p.deployment_id))
        .collect();
    assert!(
        given_up.is_empty(),
        "the promotion was reported given up ({given_up:?}) while production deployment {} is {}",
        promoted(&h).map(|p| p.id).unwrap_or_default(),
        promoted(&h)
            .map(|p| p.status().to_string())
            .unwrap_or_default()
    );
}

// ---------------------------------------------------------------------------------------------
// ecs-native: the lifecycle hook.

fn hook_answer(h: &H, payload: &serde_json::Value) -> flightdeck::native::HookAnswer {
    block_on(flightdeck::handlers::ecs_hook::handle(
        &h.ports, &h.alarms, payload,
    ))
    .expect("a hook invocation always gets an answer")
}

/// Every read and write the hook makes, failing in turn, answers IN_PROGRESS (ECS asks again),
/// never SUCCEEDED; with all of them back, the same stage is answered SUCCEEDED.
#[test]
fn the_hook_never_answers_succeeded_when_a_read_or_write_it_needs_fails() {
    let mut h = H::native(2, r#"{"type":"canary","steps":[10,100],"bake_minutes":1}"#);
    let (push, id) = h.push_event("svc", "svc", "v2", 'a');
    h.handle_push(push);
    let d = h.get(&id);
    assert_eq!(d.status(), Status::Deploying, "{:?}", d.reason);
    let arn = d
        .native
        .as_ref()
        .and_then(|n| n.service_deployment_arn.clone())
        .expect("bound to the service deployment UpdateService started");
    let payload = h.hook_due(&arn, 120);
    for op in [
        "DynamoDB Query lookup",
        "DynamoDB Query active",
        "DynamoDB GetItem",
        "CloudWatch DescribeAlarms",
        "ECS ListTasks+DescribeTasks stopped",
        "ECS DescribeServiceDeployments",
        "DynamoDB TransactWriteItems save",
    ] {
        h.w().failing = vec![op];
        let answer = hook_answer(&h, &payload);
        assert_eq!(
            answer.hook_status,
            flightdeck::native::HookStatus::InProgress,
            "{op} failing: {answer:?}"
        );
        assert!(answer.call_back_delay.is_some(), "{op}");
    }
    h.w().failing.clear();
    let answer = hook_answer(&h, &payload);
    assert_eq!(
        answer.hook_status,
        flightdeck::native::HookStatus::Succeeded
    );
}

/// The hook that finds a gating alarm stops the rollout (StopServiceDeployment). An invocation
/// that read the service deployment before the stop answers FAILED; ECS is rolling back by the
/// time that answer arrives, so it answers a stage ECS no longer waits for: the rollback goes on
/// to ROLLBACK_SUCCESSFUL and the record ends ROLLED_BACK on the revision that served before.
/// (Seed 1667 found the simulated ECS taking such a late answer for the rollback's own hook: a
/// ROLLBACK_FAILED no real schedule makes, which left the service half rolled back.)
#[test]
fn a_hook_answer_that_arrives_after_the_rollout_was_stopped_does_not_fail_ecs_rollback() {
    let mut h = H::native(
        1,
        r#"{"type":"linear","step_percent":25,"interval_minutes":1}"#,
    );
    let before = h.w().ecs.describe("svc").expect("svc").task_definition;
    let (id, arn) = h.push_native("v2", 'a');
    let payload = h.hook_due(&arn, 120);
    if let Some(alarm) = h.w().alarms.get_mut("svc-5xx") {
        alarm.state = "ALARM".into();
    }
    let answer = hook_answer(&h, &payload);
    assert_eq!(
        answer.hook_status,
        flightdeck::native::HookStatus::Succeeded,
        "ECS rolls back now: the hook lets the rollback go on"
    );
    {
        let mut w = h.w();
        let now = w.now;
        let sd = w
            .ecs
            .service_deployments
            .get_mut(&arn)
            .expect("the rollout");
        assert!(
            sd.status.starts_with("ROLLBACK"),
            "the hook stopped the rollout before it answered: {}",
            sd.status
        );
        let execution = payload["executionId"].as_str().unwrap_or_default();
        sd.answered(execution, Some(("FAILED", 30)), now);
    }
    // ECS calls the hook again as it rolls back; each answer is the one it waits for.
    for _ in 0..120 {
        if !h.get(&id).status().is_active() {
            break;
        }
        let due = h.w().ecs.service_deployments[&arn]
            .hook
            .as_ref()
            .is_some_and(|hook| hook.asked.is_none());
        if due {
            let payload = h.hook_due(&arn, 5);
            let answer = hook_answer(&h, &payload);
            let status = answer.hook_status.name();
            let execution = payload["executionId"].as_str().unwrap_or_default();
            let now = h.w().now;
            if let Some(sd) = h.w().ecs.service_deployments.get_mut(&arn) {
                sd.answered(execution, Some((status, 30)), now);
            }
        }
        h.advance(5, true, false);
    }
    let d = h.get(&id);
    assert!(!d.status().is_active(), "the deployment never ended");
    assert_eq!(
        h.w().ecs.service_deployments[&arn].status,
        "ROLLBACK_SUCCESSFUL"
    );
    assert_eq!(d.status(), Status::RolledBack, "{:?}", d.reason);
    let now_serving = h.w().ecs.describe("svc").expect("svc");
    assert_eq!(now_serving.task_definition, before);
    assert_eq!(now_serving.running_count, 1);
}

/// A rollout ECS runs without Flightdeck (a console or Terraform change) is recorded by the hook,
/// gated like any other, and listed by the API with its stages.
#[test]
fn a_native_rollout_started_outside_flightdeck_is_recorded_and_listed_with_its_stages() {
    let h = H::native(1, r#"{"type":"all-at-once","bake_minutes":0}"#);
    let arn = {
        let mut w = h.w();
        let td = w
            .ecs
            .register("svc", "app", &image("svc", &digest('e')), None);
        let now = w.now;
        let strategy = flightdeck::native::NativeStrategy::BlueGreen { bake_minutes: 0 };
        w.ecs
            .update_service_native("svc", &td, &strategy, now)
            .expect("console update")
            .expect("a service deployment")
    };
    // ECS walks its stages; at each hooked one it waits for the hook's answer.
    for _ in 0..200 {
        let (status, due) = {
            let mut w = h.w();
            let now = w.now;
            let sd = w
                .ecs
                .service_deployments
                .get_mut(&arn)
                .expect("the rollout");
            let payload = flightdeck_local::sim::hook_payload(sd, now);
            let due = match sd.hook.as_mut() {
                Some(hook) if hook.asked.is_none() => {
                    hook.asked = payload["executionId"].as_str().map(str::to_string);
                    true
                }
                _ => false,
            };
            (sd.status.clone(), due.then_some(payload))
        };
        if status != "IN_PROGRESS" {
            break;
        }
        match due {
            Some(payload) => {
                let answer = hook_answer(&h, &payload);
                assert_eq!(
                    answer.hook_status,
                    flightdeck::native::HookStatus::Succeeded
                );
                let now = h.w().now;
                let execution = payload["executionId"].as_str().unwrap_or_default();
                if let Some(sd) = h.w().ecs.service_deployments.get_mut(&arn) {
                    sd.answered(execution, Some(("SUCCEEDED", 30)), now);
                }
            }
            None => h.advance(5, true, false),
        }
    }
    assert_eq!(h.w().ecs.service_deployments[&arn].status, "SUCCESSFUL");
    h.advance(60, true, false);
    let id = flightdeck::lifecycle::external_deployment_id(&arn);
    let d = h.get(&id);
    assert_eq!(d.trigger, flightdeck::deployment::Trigger::External);
    assert_eq!(d.status(), Status::Succeeded, "{}", h.trace_tail(30));
    let request = ApiRequest {
        method: "GET".into(),
        path: "/deployments".into(),
        query: [
            ("service".to_string(), "svc".to_string()),
            ("environment".to_string(), "staging".to_string()),
        ]
        .into_iter()
        .collect(),
        caller: Some(format!("arn:aws:iam::{ACCOUNT}:role/ci-deployer")),
        account: Some(ACCOUNT.into()),
        ..ApiRequest::default()
    };
    let config = ApiConfig {
        admins: vec![],
        region: REGION.into(),
        ..ApiConfig::default()
    };
    let r = block_on(api::handle(&h.ports, &config, &request));
    assert_eq!(r.status, 200, "{}", r.body);
    let listed = r.body["deployments"].as_array().expect("a list");
    assert!(listed.iter().any(|x| x["id"] == id.as_str()), "{}", r.body);
    let trail = audit(&d).join("\n");
    assert!(trail.contains("started outside Flightdeck"), "{trail}");
    assert!(trail.contains("PRE_PRODUCTION_TRAFFIC_SHIFT"), "{trail}");
}

// ---------------------------------------------------------------------------------------------
// Fifth review (ecs-native): rollbacks and the hook's gates under timing.

/// Answers, with the real `ecs-hook` handler, every hook invocation ECS waits for on `arn`,
/// advancing `secs` at a time (`tick`: with the reconcile loop; `lose`: events lost) until
/// `done` holds or `limit` seconds passed. Returns the answers given.
fn answer_every_hook(
    h: &H,
    arn: &str,
    secs: i64,
    limit: i64,
    tick: bool,
    lose: bool,
    done: impl Fn(&H) -> bool,
) -> Vec<String> {
    let mut answers = Vec::new();
    let mut passed = 0;
    while passed <= limit && !done(h) {
        let payload = {
            let mut w = h.w();
            let now = w.now;
            match w.ecs.service_deployments.get_mut(arn) {
                Some(sd)
                    if sd
                        .hook
                        .as_ref()
                        .is_some_and(|k| k.asked.is_none() && k.due <= now) =>
                {
                    let payload = flightdeck_local::sim::hook_payload(sd, now);
                    if let Some(k) = sd.hook.as_mut() {
                        k.asked = payload["executionId"].as_str().map(str::to_string);
                    }
                    Some(payload)
                }
                _ => None,
            }
        };
        if let Some(payload) = payload {
            let answer = hook_answer(h, &payload);
            let status = answer.hook_status.name();
            answers.push(format!(
                "{} {status}",
                payload["lifecycleStage"].as_str().unwrap_or_default()
            ));
            let execution = payload["executionId"].as_str().unwrap_or_default();
            let mut w = h.w();
            let now = w.now;
            if let Some(sd) = w.ecs.service_deployments.get_mut(arn) {
                sd.answered(execution, Some((status, 30)), now);
            }
            continue;
        }
        h.advance(secs, tick, lose);
        passed += secs;
    }
    answers
}

/// The gating alarm fires in the minute between ECS finishing the rollout (SUCCESSFUL) and
/// the reconcile loop seeing it, so the rollback is UpdateService back to the previous revision
/// with the registration's strategy (linear, 10% every 2 min: ~20 min). The rollback's own
/// service deployment outlives the 10-min rollback deadline: the record ends FAILED, and the
/// next hook invocation of the rollback is taken for a rollout started outside Flightdeck,
/// recorded, gated by the alarm that is still in ALARM, and stopped with ROLLBACK: ECS puts the
/// bad revision back. The rollback must go through, and never be recorded as a new rollout.
#[test]
fn a_native_rollback_by_update_service_is_never_gated_as_an_outside_rollout() {
    let mut h = H::native(
        1,
        r#"{"type":"linear","step_percent":10,"interval_minutes":2}"#,
    );
    let before = h.w().ecs.describe("svc").expect("svc").task_definition;
    let (id, sd1) = h.push_native("v2", 'a');
    // ECS walks the rollout, the hook answering each stage; the reconcile loop has not run since.
    answer_every_hook(&h, &sd1, 5, 3600, false, true, |h| {
        h.w().ecs.service_deployments[&sd1].status != "IN_PROGRESS"
    });
    assert_eq!(
        h.w().ecs.service_deployments[&sd1].status,
        "SUCCESSFUL",
        "harness"
    );
    assert_eq!(h.get(&id).status(), Status::Shifting, "harness");
    // The gating alarm fires now (and stays in ALARM while traffic goes back).
    if let Some(alarm) = h.w().alarms.get_mut("svc-5xx") {
        alarm.state = "ALARM".into();
    }
    h.fire_alarm("evt-review-alarm", "svc");
    assert_eq!(h.get(&id).status(), Status::RollingBack, "harness");
    let sd2 = h
        .w()
        .ecs
        .services
        .get("svc")
        .and_then(|s| s.current_sd.clone())
        .expect("a service deployment");
    assert_ne!(sd2, sd1, "harness: the rollback is UpdateService back");
    // ECS walks the rollback; the hook answers its stages; the reconcile loop runs.
    let answers = answer_every_hook(&h, &sd2, 5, 3 * 3600, true, false, |h| {
        !h.w().ecs.service_deployments[&sd2].in_progress()
    });
    h.until(5, 600, true, |_| false);
    let d = h.get(&id);
    let external = h
        .w()
        .store
        .deployments
        .get(&flightdeck::lifecycle::external_deployment_id(&sd2))
        .map(|x| (x.status(), x.reason.clone()));
    let serving = h.w().ecs.describe("svc").expect("svc");
    assert_eq!(
        (serving.task_definition.as_str(), external.is_none()),
        (before.as_str(), true),
        "the rollback was undone: the service runs {} (good revision {}); the rollback's \
         service deployment {} is {}, recorded as an outside rollout: {external:?}; \
         deployment {id} is {} ({:?}); hook answers to the rollback: {answers:?}",
        serving.task_definition,
        before,
        sd2,
        h.w().ecs.service_deployments[&sd2].status,
        d.status(),
        d.reason
    );
}

/// The hook reads the gates only when the record it loaded first is DEPLOYING or SHIFTING, but
/// answers from the record as it is after its writes. Here the record is PENDING (the start's
/// result not saved yet: the invocation that called UpdateService is still on its way to the
/// save, or — its answer lost — the reconcile loop's retry saves it) when the hook loads it,
/// and DEPLOYING by the time it answers: the stage is answered SUCCEEDED with the gating alarm
/// in ALARM, never read.
#[test]
fn the_hook_never_answers_succeeded_without_reading_the_gates() {
    let mut h = H::native(1, r#"{"type":"all-at-once","bake_minutes":0}"#);
    if let Some(alarm) = h.w().alarms.get_mut("svc-5xx") {
        alarm.state = "ALARM".into();
    }
    let (push, id) = h.push_event("svc", "svc", "v2", 'a');
    let mut pushing: Pin<Box<dyn Future<Output = _> + '_>> =
        Box::pin(on_image_push::handle(&h.ports, push));
    // Until UpdateService has started the service deployment; the save of its result is next.
    let sd = loop {
        assert!(poll_once(&mut pushing).is_none(), "harness: the push ended");
        let current = h
            .w()
            .ecs
            .services
            .get("svc")
            .and_then(|s| s.current_sd.clone());
        if let Some(arn) = current {
            break arn;
        }
    };
    assert_eq!(h.get(&id).status(), Status::Pending, "harness");
    // ECS scales the new revision up and calls the hook at POST_SCALE_UP.
    for _ in 0..600 {
        if h.w().ecs.service_deployments[&sd].hook.is_some() {
            break;
        }
        let mut w = h.w();
        w.now += Duration::seconds(5);
        ecs::advance(&mut w);
    }
    let payload = {
        let mut w = h.w();
        let now = w.now;
        let s = w.ecs.service_deployments.get_mut(&sd).expect("the rollout");
        assert!(s.hook.is_some(), "harness: ECS never called the hook");
        flightdeck_local::sim::hook_payload(s, now)
    };
    // The hook loads the registration, the active deployments, the record (PENDING) and the
    // service and environment's newest records (the same, not bound yet) ...
    let calls = h.w().port_calls;
    let mut hook: Pin<Box<dyn Future<Output = _> + '_>> = Box::pin(
        flightdeck::handlers::ecs_hook::handle(&h.ports, &h.alarms, &payload),
    );
    while h.w().port_calls < calls + 4 {
        assert!(
            poll_once(&mut hook).is_none(),
            "harness: the hook answered early"
        );
    }
    // ... and meanwhile the start's result is saved: DEPLOYING.
    let _ = block_on(pushing);
    assert_eq!(h.get(&id).status(), Status::Deploying, "harness");
    let answer = block_on(hook).expect("an answer");
    let d = h.get(&id);
    assert_ne!(
        answer.hook_status,
        flightdeck::native::HookStatus::Succeeded,
        "{} answered SUCCEEDED with gating alarm svc-5xx in ALARM (never read); deployment is \
         {}; trail:\n{}",
        payload["lifecycleStage"],
        d.status(),
        audit(&d).join("\n")
    );
}

/// Acceptance: ECS's BLUE_GREEN, LINEAR and CANARY each end SUCCEEDED, with ECS's stages and
/// production weights on the audit trail and the hook's answer at each stage.
#[test]
fn each_native_strategy_ends_succeeded_with_its_stages_and_weights_on_the_trail() {
    for (strategy, weights) in [
        (r#"{"type":"all-at-once","bake_minutes":1}"#, vec![100]),
        (
            r#"{"type":"linear","step_percent":25,"interval_minutes":1}"#,
            vec![25, 50, 75, 100],
        ),
        (
            r#"{"type":"canary","steps":[10,100],"bake_minutes":1}"#,
            vec![10, 100],
        ),
    ] {
        let mut h = H::native(2, strategy);
        let (id, arn) = h.push_native("v2", 'a');
        answer_every_hook(&h, &arn, 5, 3600, true, false, |h| {
            h.get(&id).status() == Status::Succeeded
        });
        let d = h.get(&id);
        let trail = full_audit(&h, &id).join("\n");
        assert_eq!(d.status(), Status::Succeeded, "{strategy}:\n{trail}");
        for stage in [
            "POST_SCALE_UP",
            "TEST_TRAFFIC_SHIFT",
            "PRE_PRODUCTION_TRAFFIC_SHIFT",
            "PRODUCTION_TRAFFIC_SHIFT",
        ] {
            assert!(
                trail.contains(&format!("lifecycle hook at {stage}")),
                "{strategy}: {stage} missing:\n{trail}"
            );
        }
        for w in weights {
            assert!(
                trail.contains(&format!("production traffic {w}%"))
                    || trail.contains(&format!("{w}% of production traffic")),
                "{strategy}: {w}% missing:\n{trail}"
            );
        }
        assert_eq!(h.w().ecs.describe("svc").expect("svc").running_count, 2);
    }
}

/// Acceptance: a crash loop and a gating alarm each end a native rollout ROLLED_BACK through
/// StopServiceDeployment, with the classified reason.
#[test]
fn a_native_crash_loop_and_an_alarm_each_end_rolled_back_with_the_classified_reason() {
    for (quality, why) in [
        (Quality::CrashOom, "OutOfMemory"),
        (Quality::Alarming, "alarm `svc-5xx` is in ALARM"),
    ] {
        let mut h = H::native(2, r#"{"type":"canary","steps":[25,100],"bake_minutes":5}"#);
        let (push, id) = h.push_event("svc", "svc", "v2", 'a');
        h.w().ecs.quality.insert(digest('a'), quality);
        h.handle_push(push);
        let arn = h
            .get(&id)
            .native
            .as_ref()
            .and_then(|n| n.service_deployment_arn.clone())
            .expect("bound");
        let before = h.w().ecs.describe("svc").expect("svc").task_definition;
        answer_every_hook(&h, &arn, 5, 3600, true, false, |h| {
            if quality == Quality::Alarming
                && h.get(&id).traffic_percent > 0
                && let Some(alarm) = h.w().alarms.get_mut("svc-5xx")
            {
                alarm.state = "ALARM".into();
            }
            !h.get(&id).status().is_active()
        });
        let d = h.get(&id);
        let trail = audit(&d).join("\n");
        assert_eq!(d.status(), Status::RolledBack, "{why}:\n{trail}");
        assert!(
            d.reason.as_deref().unwrap_or("").contains(why) || trail.contains(why),
            "{why}: {:?}\n{trail}",
            d.reason
        );
        assert!(
            trail.contains("rollback of ECS's service deployment"),
            "{trail}"
        );
        let ecs_status = h.w().ecs.service_deployments[&arn].status.clone();
        assert_eq!(ecs_status, "ROLLBACK_SUCCESSFUL");
        assert_eq!(
            h.w().ecs.describe("svc").expect("svc").task_definition,
            before
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Review of 3c888f1..d124307.

/// The rollback of a completed native rollout is UpdateService back (SD2). While ECS walks it, a
/// push of v3 arrives and queues behind the rolling-back record, and the operator aborts it (the
/// newest record of the service is now ABORTED). SD2 outlives the rollback's deadline (slow
/// placement; here: ECS's invocation of the hook is slow), so the record ends FAILED. The next
/// hook invocation of SD2: `rollback_of` looks at the active records and only the single
/// `latest` one — the aborted push — so it does not recognise SD2 as the rollback's, records
/// it as a rollout started outside Flightdeck, gates it with the alarm still in ALARM, and
/// answers FAILED: ECS puts the bad revision back.
#[test]
fn a_newer_ended_record_hides_a_rollbacks_service_deployment_from_the_hook() {
    let mut h = H::native(1, r#"{"type":"all-at-once","bake_minutes":0}"#);
    let before = h.w().ecs.describe("svc").expect("svc").task_definition;
    let (push, id) = h.push_event("svc", "svc", "v2", 'a');
    h.handle_push(push);
    let sd1 = h
        .get(&id)
        .native
        .as_ref()
        .and_then(|n| n.service_deployment_arn.clone())
        .expect("bound");
    answer_every_hook(&h, &sd1, 5, 3600, false, true, |h| {
        h.w().ecs.service_deployments[&sd1].status != "IN_PROGRESS"
    });
    assert_eq!(
        h.w().ecs.service_deployments[&sd1].status,
        "SUCCESSFUL",
        "harness"
    );
    if let Some(alarm) = h.w().alarms.get_mut("svc-5xx") {
        alarm.state = "ALARM".into();
    }
    h.fire_alarm("evt-review-alarm-1", "svc");
    assert_eq!(h.get(&id).status(), Status::RollingBack, "harness");
    let sd2 = h
        .w()
        .ecs
        .services
        .get("svc")
        .and_then(|s| s.current_sd.clone())
        .expect("a service deployment");
    assert_ne!(sd2, sd1, "harness: the rollback is UpdateService back");
    // A push of v3 queues behind the rollback; the operator aborts it.
    let (push, b) = h.push_event("svc", "svc", "v3", 'b');
    h.handle_push(push);
    assert_eq!(h.get(&b).status(), Status::Pending, "harness: queued");
    block_on(flightdeck::handlers::apply(
        &h.ports,
        &b,
        &flightdeck::lifecycle::Fact::Stopped {
            by: format!("arn:aws:iam::{ACCOUNT}:role/ci-deployer"),
            abort: true,
        },
    ))
    .expect("aborted");
    assert_eq!(h.get(&b).status(), Status::Aborted, "harness");
    // SD2 is slow (its hook answer is late); the rollback's deadline ends the record.
    assert!(
        h.until(5, 3600, true, |h| !h.get(&id).status().is_active()),
        "harness: the rollback never ended"
    );
    assert!(
        h.w().ecs.service_deployments[&sd2].in_progress(),
        "harness: SD2 still walks"
    );
    let answers = answer_every_hook(&h, &sd2, 5, 3 * 3600, true, false, |h| {
        !h.w().ecs.service_deployments[&sd2].in_progress()
    });
    h.until(5, 300, true, |_| false);
    let external = h
        .w()
        .store
        .deployments
        .get(&flightdeck::lifecycle::external_deployment_id(&sd2))
        .map(|x| (x.status(), x.reason.clone()));
    let serving = h.w().ecs.describe("svc").expect("svc");
    let sd2_status = h.w().ecs.service_deployments[&sd2].status.clone();
    let d = h.get(&id);
    assert_eq!(
        (serving.task_definition.as_str(), external.is_none()),
        (before.as_str(), true),
        "the rollback was undone: the service runs {}; SD2 is {sd2_status}, recorded as an \
         outside rollout: {external:?}; deployment {id} is {} ({:?}); hook answers to SD2: \
         {answers:?}",
        serving.task_definition,
        d.status(),
        d.reason
    );
}

// ---------------------------------------------------------------------------------------------
// Gates (issue: canary judge, watch window, revert, vulnerability gate, change freezes,
// reminders) through the real handlers.

/// The service's task definition now.
fn serving(h: &H, service: &str) -> String {
    let w = h.w();
    w.ecs
        .services
        .get(service)
        .expect("service")
        .task_definition()
        .to_string()
}

/// The image a task definition runs.
fn image_of(h: &H, td: &str) -> String {
    h.w().ecs.task_definitions[td].image.clone()
}

fn scan_event(h: &mut H, detail_type: &str, repository: &str, dg: &str) -> serde_json::Value {
    let id = h.event_id();
    let now = h.w().now;
    let source = if detail_type == "Inspector2 Scan" {
        "aws.inspector2"
    } else {
        "aws.ecr"
    };
    serde_json::json!({
        "version": "0", "id": id, "detail-type": detail_type, "source": source,
        "account": ACCOUNT, "time": now.to_rfc3339(), "region": REGION, "resources": [],
        "detail": { "scan-status": "COMPLETE", "repository-name": repository,
                    "image-digest": dg, "finding-severity-counts": {} }
    })
}

fn api_call(
    h: &H,
    method: &str,
    path: &str,
    caller: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let request = ApiRequest {
        method: method.into(),
        path: path.into(),
        caller: Some(caller.into()),
        account: Some(ACCOUNT.into()),
        body: body.map(str::to_string),
        ..ApiRequest::default()
    };
    let config = ApiConfig {
        admins: vec![format!("arn:aws:iam::{ACCOUNT}:user/platform-admin")],
        region: REGION.into(),
        ..ApiConfig::default()
    };
    let r = block_on(api::handle(&h.ports, &config, &request));
    (r.status, r.body)
}

#[test]
fn an_ecr_scan_event_with_findings_fails_the_held_push_before_anything_changes() {
    let mut h = H::rolling(2, r#","scan":{"block_at":"HIGH"}"#);
    let before = serving(&h, "api");
    let (push, id) = h.push_event("api", "api", "v2", 'c');
    h.handle_push(push);
    let d = h.get(&id);
    assert!(
        matches!(d.hold(), Some(flightdeck::deployment::Hold::Scan { .. })),
        "{:?}",
        d.state
    );
    assert_eq!(published(&h, &id, "deployment.waiting"), 1);
    h.w().scans.insert(
        digest('c'),
        flightdeck::scan::ScanReport::Complete {
            counts: vec![(flightdeck::scan::Severity::High, 1)],
            findings: vec![flightdeck::scan::Finding {
                id: "CVE-2026-4242".into(),
                severity: flightdeck::scan::Severity::High,
                package: Some("libxml2".into()),
            }],
        },
    );
    let event = scan_event(&mut h, "ECR Image Scan", "api", &digest('c'));
    block_on(on_image_push::handle(&h.ports, event)).expect("scan event handled");
    let d = h.get(&id);
    assert_eq!(d.status(), Status::Failed, "{:?}", d.reason);
    assert!(
        d.reason
            .as_deref()
            .unwrap()
            .contains("CVE-2026-4242 (HIGH, libxml2)"),
        "{:?}",
        d.reason
    );
    assert_eq!(serving(&h, "api"), before, "nothing changed in ECS");
    assert!(
        d.rollout.new_task_definition.is_none(),
        "no revision registered"
    );
    assert_eq!(published(&h, &id, "deployment.failed"), 1);
}

#[test]
fn a_clean_scan_read_by_the_reconcile_loop_releases_the_push_without_any_scan_event() {
    let mut h = H::rolling(2, r#","scan":{"block_at":"CRITICAL","wait_minutes":10}"#);
    let (push, id) = h.push_event("api", "api", "v2", 'c');
    h.handle_push(push);
    assert_eq!(h.get(&id).status(), Status::Pending);
    // Inspector's scan event is lost; the result is there when the reconcile loop looks.
    h.w().scans.insert(
        digest('c'),
        flightdeck::scan::ScanReport::Complete {
            counts: vec![(flightdeck::scan::Severity::High, 2)],
            findings: Vec::new(),
        },
    );
    assert!(
        h.until(10, 600, true, |h| h.get(&id).status() == Status::Succeeded),
        "{}",
        h.trace_tail(30)
    );
    let trail = audit(&h.get(&id)).join("\n");
    assert!(
        trail.contains("vulnerability scan passed: nothing at or above CRITICAL (HIGH 2)"),
        "{trail}"
    );
}

#[test]
fn a_watch_window_alarm_5_minutes_after_success_rolls_back_to_the_previous_revision() {
    let mut h = H::rolling(2, r#","alarms":["api-5xx"],"watch_minutes":30"#);
    let before = serving(&h, "api");
    let (push, id) = h.push_event("api", "api", "v2", 'c');
    h.handle_push(push);
    assert!(
        h.until(5, 600, true, |h| h.get(&id).status() == Status::Succeeded),
        "{}",
        h.trace_tail(30)
    );
    assert_ne!(serving(&h, "api"), before);
    h.until(30, 300, true, |_| false);
    assert_eq!(
        h.get(&id).status(),
        Status::Succeeded,
        "still watched, nothing fired"
    );
    h.fire_alarm("evt-watch-1", "api");
    let d = h.get(&id);
    assert_eq!(d.status(), Status::RollingBack, "{:?}", d.reason);
    assert!(
        h.until(5, 600, true, |h| h.get(&id).status() == Status::RolledBack),
        "{}",
        h.trace_tail(30)
    );
    let d = h.get(&id);
    assert!(
        d.reason
            .as_deref()
            .unwrap()
            .starts_with("post-deployment watch: alarm `api-5xx`"),
        "{:?}",
        d.reason
    );
    assert_eq!(
        serving(&h, "api"),
        before,
        "the previous revision serves again"
    );
    assert_eq!(published(&h, &id, "deployment.rolled_back"), 1);
}

#[test]
fn a_newer_push_ends_the_watch_so_the_older_deployment_never_rolls_it_back() {
    let mut h = H::rolling(2, r#","alarms":["api-5xx"],"watch_minutes":30"#);
    let (push, first) = h.push_event("api", "api", "v2", 'c');
    h.handle_push(push);
    assert!(h.until(5, 600, true, |h| h.get(&first).status()
        == Status::Succeeded));
    let (push, second) = h.push_event("api", "api", "v3", 'd');
    h.handle_push(push);
    assert_eq!(
        h.get(&first).watch_until(),
        None,
        "watch ended by the newer deployment"
    );
    assert!(
        h.until(5, 600, true, |h| h.get(&second).status()
            == Status::Succeeded),
        "{}",
        h.trace_tail(30)
    );
    let newest = serving(&h, "api");
    h.fire_alarm("evt-watch-2", "api");
    assert_eq!(h.get(&first).status(), Status::Succeeded);
    assert_eq!(
        h.get(&second).status(),
        Status::RollingBack,
        "the alarm rolls back the one it watches now"
    );
    let _ = newest;
}

#[test]
fn a_revert_in_one_call_deploys_the_last_revision_that_succeeded_before() {
    let mut h = H::rolling(2, "");
    let deployer = format!("arn:aws:iam::{ACCOUNT}:role/ci-deployer");
    let (push, good) = h.push_event("api", "api", "v2", 'c');
    h.handle_push(push);
    assert!(h.until(5, 600, true, |h| h.get(&good).status() == Status::Succeeded));
    let good_td = serving(&h, "api");
    let (push, bad) = h.push_event("api", "api", "v3", 'd');
    h.handle_push(push);
    assert!(h.until(5, 600, true, |h| h.get(&bad).status() == Status::Succeeded));
    // Only the newest SUCCEEDED deployment can be reverted.
    let (status, body) = api_call(
        &h,
        "POST",
        &format!("/deployments/{good}/rollback"),
        &deployer,
        None,
    );
    assert_eq!(status, 409, "{body}");
    let (status, body) = api_call(
        &h,
        "POST",
        &format!("/deployments/{bad}/rollback"),
        &deployer,
        None,
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["trigger"], "revert");
    assert_eq!(body["digest"], digest('c').as_str());
    let revert = body["id"].as_str().unwrap().to_string();
    // Asked again: the same revert.
    let (status, again) = api_call(
        &h,
        "POST",
        &format!("/deployments/{bad}/rollback"),
        &deployer,
        None,
    );
    assert_eq!((status, again["id"].as_str()), (200, Some(revert.as_str())));
    assert!(
        h.until(5, 600, true, |h| h.get(&revert).status()
            == Status::Succeeded),
        "{}",
        h.trace_tail(30)
    );
    let now_serving = serving(&h, "api");
    assert_ne!(now_serving, good_td, "a new revision of the good image");
    assert_eq!(image_of(&h, &now_serving), image_of(&h, &good_td));
    assert!(
        audit(&h.get(&bad))
            .join("\n")
            .contains(&format!("reverted by deployment {revert}"))
    );
}

#[test]
fn a_push_held_by_a_freeze_starts_on_an_admin_override_with_its_reason_recorded() {
    // A freeze from 2020 to 2099: no rollout starts by itself.
    let mut h = H::rolling(
        2,
        r#"}, "freeze": {"timezone": "Europe/Berlin", "dates": [{"from": "2020-01-01T00:00:00Z",
           "to": "2099-01-01T00:00:00Z", "reason": "datacenter migration"}]"#,
    );
    let before = serving(&h, "api");
    let (push, id) = h.push_event("api", "api", "v2", 'c');
    h.handle_push(push);
    h.until(30, 300, true, |_| false);
    let d = h.get(&id);
    assert!(
        matches!(d.hold(), Some(flightdeck::deployment::Hold::Freeze { .. })),
        "{:?}",
        d.state
    );
    assert!(
        d.reason
            .as_deref()
            .unwrap()
            .contains("datacenter migration"),
        "{:?}",
        d.reason
    );
    assert_eq!(
        published(&h, &id, "deployment.waiting"),
        1,
        "announced once"
    );
    assert_eq!(serving(&h, "api"), before);
    // A deployer may not override; an admin may, with a reason.
    let deployer = format!("arn:aws:iam::{ACCOUNT}:role/ci-deployer");
    let path = format!("/deployments/{id}/override-freeze");
    let reason = r#"{"reason": "security fix for CVE-2026-4242"}"#;
    let (status, body) = api_call(&h, "POST", &path, &deployer, Some(reason));
    assert_eq!(status, 403, "{body}");
    let admin = format!("arn:aws:iam::{ACCOUNT}:user/platform-admin");
    let (status, body) = api_call(&h, "POST", &path, &admin, Some("{}"));
    assert_eq!(status, 400, "a reason is required: {body}");
    let (status, body) = api_call(&h, "POST", &path, &admin, Some(reason));
    assert_eq!(status, 200, "{body}");
    assert!(
        h.until(5, 600, true, |h| h.get(&id).status() == Status::Succeeded),
        "{}",
        h.trace_tail(30)
    );
    let trail = audit(&h.get(&id)).join("\n");
    assert!(
        trail.contains("overridden by") && trail.contains("CVE-2026-4242"),
        "{trail}"
    );
}

/// GetMetricData failing (throttled) never passes a canary step: the bake ends only on a verdict
/// taken after it; the step is held, and rolled back once its end could not be judged within
/// the progress deadline.
#[test]
fn a_failing_metrics_read_never_passes_a_canary_step() {
    let mut h = H::alb(
        2,
        0,
        r#"{"type":"canary","steps":[10,100],"bake_minutes":3}"#,
    );
    h.w()
        .store
        .registrations
        .get_mut(&("web".to_string(), "staging".to_string()))
        .expect("registration")
        .spec
        .gates
        .analysis = Some(flightdeck::judge::Analysis {
        min_requests: 10,
        max_error_rate_increase: 0.01,
        max_latency_increase: 0.25,
        confidence: 0.95,
        no_data: flightdeck::judge::NoData::Pass,
    });
    let id = h.pushed_to_step("v2", 10, 600);
    for _ in 0..8 {
        h.advance(60, false, false);
        let _ = block_on(shifter::handle(&h.ports, &FailingAlarms));
        let d = h.get(&id);
        assert!(
            d.status() == Status::Shifting && d.traffic_percent == 10,
            "{} at {}%: {:?}",
            d.status(),
            d.traffic_percent,
            d.reason
        );
    }
    assert_eq!(h.percent_to(TG_GREEN), 10);
    assert!(
        h.until(60, 900, false, |h| {
            let _ = block_on(shifter::handle(&h.ports, &FailingAlarms));
            h.get(&id).status() == Status::RolledBack
        }),
        "{}",
        h.trace_tail(20)
    );
    let reason = h.get(&id).reason.unwrap_or_default();
    assert!(
        reason.contains("canary metrics could not be read"),
        "{reason}"
    );
}

// ---------------------------------------------------------------------------------------------
// Adversarial review of the gates (f3dc03d..HEAD): schedules the design asks to survive.

/// Adds a production registration (ECS service `api-prod`) that staging `api` promotes to (its
/// tag pattern matches none of the pushes: production gets only promotions).
fn promoting_to_production(h: &H) {
    let mut w = h.w();
    let key = ("api".to_string(), "staging".to_string());
    if let Some(reg) = w.store.registrations.get_mut(&key) {
        reg.spec.promote_to = Some("production".into());
    }
    let json = format!(
        r#"{{"cluster":"{CLUSTER}","repository":"api","container":"app","tag_pattern":"release-*",
            "engine":{{"type":"rolling","service":"api-prod"}},
            "strategy":{{"type":"all-at-once","bake_minutes":0}},
            "gates":{{"max_failed_tasks":3}},
            "deployers":["arn:aws:iam::{ACCOUNT}:role/ci-deployer"]}}"#
    );
    let reg = Registration::parse("api", "production", &json).expect("registration");
    w.store
        .registrations
        .insert(("api".into(), "production".into()), reg);
    let td = w
        .ecs
        .register("api", "app", &image("api", &digest('0')), None);
    w.ecs.create_service(CLUSTER, "api-prod", &td, 2, None);
    let now = w.now;
    w.ecs.settle_initial(now);
}

/// The vulnerability gate waits at most `wait_minutes` for a scan result, then the `missing`
/// policy decides. When DescribeImageScanFindings itself fails (the role lacks the permission on
/// this repository, KMS, a throttle that lasts), the reconcile loop's fallback read errors out
/// before it asks the deadline, every minute: the deployment stays PENDING for ever, with one
/// `.waiting` alert and nothing after it.
#[test]
fn a_scan_that_cannot_be_read_still_ends_its_hold_after_wait_minutes() {
    let mut h = H::rolling(
        2,
        r#","scan":{"block_at":"CRITICAL","wait_minutes":10,"missing":"fail"}"#,
    );
    h.w().failing.push("ECR DescribeImageScanFindings");
    let (push, id) = h.push_event("api", "api", "v2", 'c');
    h.handle_push(push);
    assert!(
        matches!(
            h.get(&id).hold(),
            Some(flightdeck::deployment::Hold::Scan { .. })
        ),
        "harness: held for the scan"
    );
    // An hour: six times the 10-minute wait.
    h.until(30, 3600, true, |h| h.get(&id).status() != Status::Pending);
    let d = h.get(&id);
    assert_eq!(
        d.status(),
        Status::Failed,
        "an hour after a push held for at most 10 min by the scan gate (missing: fail), it is \
         {} ({:?}, hold {:?}); alerts: waiting {}, failed {}",
        d.status(),
        d.reason,
        d.hold(),
        published(&h, &id, "deployment.waiting"),
        published(&h, &id, "deployment.failed")
    );
}

/// A revert of the newest SUCCEEDED deployment ends that deployment's watch window when it takes
/// the slot (`Fact::WatchEnded`), and ending the watch owes the promotion the watch had held
/// back: the revision an operator is reverting, because it is bad, is promoted to production by
/// the revert itself.
#[test]
fn a_revert_never_promotes_the_revision_it_reverts() {
    let mut h = H::rolling(2, r#","alarms":["api-5xx"],"watch_minutes":30"#);
    promoting_to_production(&h);
    let deployer = format!("arn:aws:iam::{ACCOUNT}:role/ci-deployer");
    let (push, good) = h.push_event("api", "api", "v2", 'c');
    h.handle_push(push);
    assert!(h.until(5, 600, true, |h| h.get(&good).status() == Status::Succeeded));
    // Its watch passes quietly: v2 is promoted to production (as designed).
    assert!(h.until(30, 2400, true, |h| h.get(&good).watch_until().is_none()));
    let (push, bad) = h.push_event("api", "api", "v3", 'd');
    h.handle_push(push);
    assert!(h.until(5, 600, true, |h| h.get(&bad).status() == Status::Succeeded));
    assert!(
        h.get(&bad).watch_until().is_some(),
        "harness: v3 is watched"
    );
    // Two minutes later the operator reverts v3.
    h.until(5, 120, true, |_| false);
    let (status, body) = api_call(
        &h,
        "POST",
        &format!("/deployments/{bad}/rollback"),
        &deployer,
        None,
    );
    assert_eq!(status, 201, "{body}");
    let revert = body["id"].as_str().unwrap().to_string();
    h.until(5, 900, true, |h| !h.get(&revert).status().is_active());
    let promoted_bad: Vec<(String, Status)> = h
        .w()
        .store
        .deployments
        .values()
        .filter(|d| d.environment == "production" && d.digest == digest('d'))
        .map(|d| (d.id.clone(), d.status()))
        .collect();
    assert!(
        promoted_bad.is_empty(),
        "reverting v3 in staging promoted v3 to production: {promoted_bad:?}; v3's trail:\n{}",
        audit(&h.get(&bad)).join("\n")
    );
}

/// A revert is of "the newest SUCCEEDED deployment": it deploys the last revision that succeeded
/// before it. Asked while a newer push is DEPLOYING, the revert queues behind it and, once that
/// push has succeeded, deploys the old revision over it: the newest release (perhaps the fix)
/// is undone by a revert of an older one, which by then is not the newest SUCCEEDED.
#[test]
fn a_revert_asked_while_a_newer_push_deploys_never_undoes_that_push() {
    let mut h = H::rolling(2, "");
    let deployer = format!("arn:aws:iam::{ACCOUNT}:role/ci-deployer");
    for (tag, c) in [("v2", 'c'), ("v3", 'd')] {
        let (push, id) = h.push_event("api", "api", tag, c);
        h.handle_push(push);
        assert!(h.until(5, 600, true, |h| h.get(&id).status() == Status::Succeeded));
    }
    let v3 = h
        .w()
        .store
        .deployments
        .values()
        .find(|d| d.digest == digest('d'))
        .map(|d| d.id.clone())
        .unwrap();
    let (push, v4) = h.push_event("api", "api", "v4", 'e');
    h.handle_push(push);
    assert_eq!(h.get(&v4).status(), Status::Deploying, "harness");
    let (status, body) = api_call(
        &h,
        "POST",
        &format!("/deployments/{v3}/rollback"),
        &deployer,
        None,
    );
    if status == 409 {
        return; // refused while a newer deployment is in flight: fine
    }
    assert_eq!(status, 201, "{body}");
    let revert = body["id"].as_str().unwrap().to_string();
    h.until(5, 1800, true, |h| {
        !h.get(&v4).status().is_active() && !h.get(&revert).status().is_active()
    });
    let now_serving = image_of(&h, &serving(&h, "api"));
    assert!(
        h.get(&v4).status() != Status::Succeeded || now_serving.ends_with(&digest('e')),
        "v4 ({v4}) succeeded after the revert of v3 was asked; the revert {revert} ({}) then \
         deployed v2 over it: the service runs {now_serving}",
        h.get(&revert).status()
    );
}

/// A rollout started outside Flightdeck (ecs-native: a console or Terraform change) is recorded
/// by the hook and takes the service's slot — without ending the watch window of the SUCCEEDED
/// deployment before it. A gating alarm then (the new rollout's own trouble, say) rolls the
/// watched deployment back while the newer rollout is in flight: the watched one asks ECS for
/// its previous revision over the rollout that took over.
#[test]
fn a_rollout_started_outside_flightdeck_ends_the_watch_of_the_one_before() {
    let mut h = H::native(1, r#"{"type":"all-at-once","bake_minutes":0}"#);
    {
        let mut w = h.w();
        let key = ("svc".to_string(), "staging".to_string());
        if let Some(reg) = w.store.registrations.get_mut(&key) {
            reg.spec.gates.watch_minutes = 30;
        }
    }
    let (id, sd1) = h.push_native("v2", 'a');
    answer_every_hook(&h, &sd1, 5, 3600, true, false, |h| {
        h.get(&id).status() == Status::Succeeded
    });
    assert_eq!(h.get(&id).status(), Status::Succeeded, "harness");
    assert!(h.get(&id).watch_until().is_some(), "harness: watched");
    // A console change starts a rollout of another revision.
    let sd_ext = {
        let mut w = h.w();
        let td = w
            .ecs
            .register("svc", "app", &image("svc", &digest('e')), None);
        let now = w.now;
        let strategy = flightdeck::native::NativeStrategy::BlueGreen { bake_minutes: 0 };
        w.ecs
            .update_service_native("svc", &td, &strategy, now)
            .expect("console update")
            .expect("a service deployment")
    };
    let external = flightdeck::lifecycle::external_deployment_id(&sd_ext);
    answer_every_hook(&h, &sd_ext, 5, 600, false, false, |h| {
        h.w()
            .store
            .deployments
            .get(&external)
            .is_some_and(|d| d.status().is_active())
    });
    let ext = h.get(&external);
    assert!(
        ext.status().is_active(),
        "harness: the outside rollout is recorded and in flight"
    );
    // The gating alarm fires while the outside rollout is in flight.
    if let Some(alarm) = h.w().alarms.get_mut("svc-5xx") {
        alarm.state = "ALARM".into();
    }
    h.fire_alarm("evt-review-watch-ext", "svc");
    let d = h.get(&id);
    let calls: Vec<String> = d.outbox.iter().map(|e| e.effect.describe()).collect();
    // What ECS is asked for next, once both records have acted.
    if let Some(alarm) = h.w().alarms.get_mut("svc-5xx") {
        alarm.state = "OK".into();
    }
    answer_every_hook(&h, &sd_ext, 5, 900, true, false, |_| false);
    let after = h.get(&id);
    let serving = h.w().ecs.describe("svc").expect("svc").task_definition;
    assert_eq!(
        d.status(),
        Status::Succeeded,
        "the watched deployment {id} rolled back ({:?}) while the newer rollout {external} ({}) \
         held the slot; its rollback call: {calls:?}; 15 min later it is {} and the service \
         runs {serving}",
        d.reason,
        h.get(&external).status(),
        after.status()
    );
}

/// The watch ends early when a newer deployment "takes over" — but a push the vulnerability gate
/// fails (or a freeze holds) takes the slot before its gates are read, and never changes
/// anything. Here v3 is failed by the scan before anything changes; the watched v2 is watched no
/// more, and when its alarm fires inside its window nothing rolls it back.
#[test]
fn a_push_failed_by_the_scan_gate_does_not_end_the_watch_of_the_release_before_it() {
    let mut h = H::rolling(
        2,
        r#","alarms":["api-5xx"],"watch_minutes":30,"scan":{"block_at":"HIGH"}"#,
    );
    let before = serving(&h, "api");
    let clean = flightdeck::scan::ScanReport::Complete {
        counts: Vec::new(),
        findings: Vec::new(),
    };
    h.w().scans.insert(digest('c'), clean);
    let (push, v2) = h.push_event("api", "api", "v2", 'c');
    h.handle_push(push);
    assert!(h.until(5, 600, true, |h| h.get(&v2).status() == Status::Succeeded));
    assert!(h.get(&v2).watch_until().is_some(), "harness: v2 watched");
    // v3 has a HIGH finding: it fails before anything changes.
    h.w().scans.insert(
        digest('d'),
        flightdeck::scan::ScanReport::Complete {
            counts: vec![(flightdeck::scan::Severity::High, 1)],
            findings: vec![flightdeck::scan::Finding {
                id: "CVE-2026-4242".into(),
                severity: flightdeck::scan::Severity::High,
                package: Some("libxml2".into()),
            }],
        },
    );
    let (push, v3) = h.push_event("api", "api", "v3", 'd');
    h.handle_push(push);
    assert_eq!(
        h.get(&v3).status(),
        Status::Failed,
        "harness: v3 failed by the scan"
    );
    // Five minutes later, inside v2's window, its alarm fires.
    h.until(5, 300, true, |_| false);
    h.fire_alarm("evt-review-watch-scan", "api");
    let d = h.get(&v2);
    assert_eq!(
        d.status(),
        Status::RollingBack,
        "v2's alarm fired 5 min into its 30-min watch and nothing rolled it back ({}, watch \
         until {:?}); the service still runs v2 ({} was before it). v2's trail:\n{}",
        d.status(),
        d.watch_until(),
        before,
        audit(&d).join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Second review of the gates (the fixes of fa7b645): each fails on that commit.

/// The hook records a rollout started outside Flightdeck (PutItem create), then ends the watch
/// of the stage holder and takes the slot. Any call after the create may fail (a throttled
/// stage read, a Lambda timeout): the hook answers IN_PROGRESS and ECS asks again — and the
/// next invocation finds the record (bound to the service deployment) and never gets to
/// `record_external` again. The release before stays watched and holds the slot while ECS runs
/// the newer rollout: its watch rollback (the alarm the newer revision trips) asks ECS for the
/// revision before it, over the rollout that took over.
#[test]
fn a_rollout_started_outside_flightdeck_ends_the_watch_even_when_its_first_hook_call_failed_after_recording_it()
 {
    let mut h = H::native(1, r#"{"type":"all-at-once","bake_minutes":0}"#);
    {
        let mut w = h.w();
        let key = ("svc".to_string(), "staging".to_string());
        if let Some(reg) = w.store.registrations.get_mut(&key) {
            reg.spec.gates.watch_minutes = 30;
        }
    }
    let (id, sd1) = h.push_native("v2", 'a');
    answer_every_hook(&h, &sd1, 5, 3600, true, false, |h| {
        h.get(&id).status() == Status::Succeeded
    });
    assert!(h.get(&id).watch_until().is_some(), "harness: watched");
    let sd_ext = {
        let mut w = h.w();
        let td = w
            .ecs
            .register("svc", "app", &image("svc", &digest('e')), None);
        let now = w.now;
        let strategy = flightdeck::native::NativeStrategy::BlueGreen { bake_minutes: 0 };
        w.ecs
            .update_service_native("svc", &td, &strategy, now)
            .expect("console update")
            .expect("a service deployment")
    };
    let external = flightdeck::lifecycle::external_deployment_id(&sd_ext);
    // The first invocation: recorded, then the stage read is throttled.
    let payload = h.hook_due(&sd_ext, 600);
    h.w().failing.push("DynamoDB GetItem stage");
    let answer = hook_answer(&h, &payload);
    h.w().failing.retain(|op| *op != "DynamoDB GetItem stage");
    assert_eq!(answer.hook_status.name(), "IN_PROGRESS", "harness");
    assert!(
        h.w().store.deployments.contains_key(&external),
        "harness: recorded before the failure"
    );
    {
        let mut w = h.w();
        let now = w.now;
        let execution = payload["executionId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(sd) = w.ecs.service_deployments.get_mut(&sd_ext) {
            sd.answered(
                &execution,
                Some(("IN_PROGRESS", flightdeck::handlers::ecs_hook::RETRY_SECONDS)),
                now,
            );
        }
    }
    // ECS asks again; every call works now.
    let answers = answer_every_hook(&h, &sd_ext, 5, 120, false, false, |_| false);
    assert!(!answers.is_empty(), "harness: ECS asked again");
    let holder = h
        .w()
        .store
        .stages
        .get(&("svc".to_string(), "staging".to_string()))
        .and_then(|s| s.holder.clone());
    let before = h.get(&id);
    assert!(
        before.watch_until().is_none() && holder.as_deref() == Some(external.as_str()),
        "ECS runs the outside rollout {external} ({}; hook answers {answers:?}), yet {id} is \
         still watched until {:?} and the slot is held by {holder:?}",
        h.get(&external).status(),
        before.watch_until()
    );
}

/// The fix ends the watch of the release before only "once its own gates (scan, freeze) let it
/// start, so a push they hold leaves the watch on". But the freeze is asked again at the last
/// decision before the rollout call (`RevisionRegistered`), after the watch was ended: here
/// RegisterTaskDefinition is throttled for a minute across the start of a change freeze; v3 is
/// then held PENDING for the whole freeze, having changed nothing — and v2, 10 minutes into its
/// 30-minute watch, is watched no more: its alarm rolls nothing back.
#[test]
fn a_push_held_by_a_freeze_that_began_while_its_revision_was_registered_leaves_the_watch_on() {
    let mut h = H::rolling(2, r#","alarms":["api-5xx"],"watch_minutes":30"#);
    let (push, v2) = h.push_event("api", "api", "v2", 'c');
    h.handle_push(push);
    assert!(h.until(5, 600, true, |h| h.get(&v2).status() == Status::Succeeded));
    let v2_serving = serving(&h, "api");
    // A freeze from 10 minutes from now, for a day.
    let from = h.w().now + Duration::minutes(10);
    let freeze: flightdeck::freeze::Freeze = serde_json::from_value(serde_json::json!({
        "timezone": "UTC",
        "dates": [{ "from": from.to_rfc3339(), "to": (from + Duration::days(1)).to_rfc3339(),
                    "reason": "launch day" }]
    }))
    .expect("freeze");
    h.w()
        .store
        .registrations
        .get_mut(&("api".to_string(), "staging".to_string()))
        .expect("registration")
        .spec
        .freeze = Some(freeze);
    // v3 is pushed 30 s before the freeze; RegisterTaskDefinition is throttled for a minute.
    h.until(10, 570, true, |h| h.w().now >= from - Duration::seconds(30));
    lock(&h.script).register_fails = true;
    let (push, v3) = h.push_event("api", "api", "v3", 'd');
    h.handle_push(push);
    h.until(10, 60, true, |_| false);
    lock(&h.script).register_fails = false;
    h.until(10, 180, true, |h| {
        matches!(
            h.get(&v3).hold(),
            Some(flightdeck::deployment::Hold::Freeze { .. })
        )
    });
    let d3 = h.get(&v3);
    assert!(
        matches!(d3.hold(), Some(flightdeck::deployment::Hold::Freeze { .. })),
        "harness: v3 held by the freeze ({}, {:?})",
        d3.status(),
        d3.reason
    );
    assert_eq!(
        serving(&h, "api"),
        v2_serving,
        "harness: v3 changed nothing"
    );
    // Inside v2's watch window, its alarm fires.
    h.fire_alarm("evt-review2-freeze", "api");
    let d = h.get(&v2);
    assert_eq!(
        d.status(),
        Status::RollingBack,
        "v2's alarm fired {} min after its success, inside its 30-min watch, while v3 waits out \
         the freeze having changed nothing; v2 is {} (watch until {:?}). v2's trail:\n{}",
        (h.w().now - h.get(&v2).finished_at().unwrap_or(h.w().now)).num_minutes(),
        d.status(),
        d.watch_until(),
        audit(&d).join("\n")
    );
}
/// README, API: a revert "asked again" answers 200 with the same revert (a client retrying a
/// call whose answer it lost — API Gateway's 29-s timeout, say). Once that revert has
/// succeeded, the reverted deployment is no longer the newest SUCCEEDED one, and the retry is
/// refused with 409 "deploy an earlier revision by digest instead" — the branch of `revert`
/// that answers 200 for a SUCCEEDED revert is never reached.
#[test]
fn a_revert_asked_again_after_it_succeeded_answers_200_with_that_revert() {
    let mut h = H::rolling(2, "");
    let deployer = format!("arn:aws:iam::{ACCOUNT}:role/ci-deployer");
    let mut ids = Vec::new();
    for (tag, c) in [("v2", 'c'), ("v3", 'd')] {
        let (push, id) = h.push_event("api", "api", tag, c);
        h.handle_push(push);
        assert!(h.until(5, 600, true, |h| h.get(&id).status() == Status::Succeeded));
        ids.push(id);
    }
    let bad = &ids[1];
    let path = format!("/deployments/{bad}/rollback");
    let (status, body) = api_call(&h, "POST", &path, &deployer, None);
    assert_eq!(status, 201, "{body}");
    let revert = body["id"].as_str().unwrap().to_string();
    assert!(h.until(5, 600, true, |h| h.get(&revert).status()
        == Status::Succeeded));
    let (status, again) = api_call(&h, "POST", &path, &deployer, None);
    assert_eq!(
        (status, again["id"].as_str()),
        (200, Some(revert.as_str())),
        "the same revert asked again after it succeeded: {again}"
    );
}

// ---------------------------------------------------------------------------------------------
// The canary judge on ECS's own CANARY steps (ecs-native).

/// An ecs-native `svc` judged by `gates.analysis`, behind production rule `RULE` whose forward
/// action splits TG_BLUE (serving) / TG_GREEN; each minute's ALB samples come from `minute`
/// (by target group ARN and the share of production traffic on it).
fn native_judged(strategy: &str) -> H {
    let h = H::native(2, strategy);
    {
        let mut w = h.w();
        w.store
            .registrations
            .get_mut(&("svc".to_string(), "staging".to_string()))
            .expect("registration")
            .spec
            .gates
            .analysis = Some(flightdeck::judge::Analysis {
            min_requests: 50,
            max_error_rate_increase: 0.01,
            max_latency_increase: 0.25,
            confidence: 0.95,
            no_data: flightdeck::judge::NoData::Fail,
        });
        if let Some(s) = w.ecs.services.get_mut("svc") {
            s.production_rule = Some(RULE.into());
        }
        w.elb.rules.insert(
            RULE.into(),
            vec![RuleAction::Forward {
                groups: vec![(TG_BLUE.into(), 100), (TG_GREEN.into(), 0)],
                stickiness: None,
            }],
        );
    }
    h
}

/// One minute of ALB samples for both target groups: `canary_rate` errors on TG_GREEN at
/// `percent` of 1,000 requests a minute, a tenth of a percent on TG_BLUE.
fn alb_minute(h: &H, percent: u8, canary_rate: f64) {
    let mut w = h.w();
    let at = w.now - Duration::seconds(30);
    for (tg, share, rate) in [
        (TG_GREEN, f64::from(percent), canary_rate),
        (TG_BLUE, 100.0 - f64::from(percent), 0.001),
    ] {
        let requests = share * 10.0;
        let key = flightdeck::registration::target_group_dimension(tg).to_string();
        w.alb_metrics.entry(key).or_default().push((
            at,
            flightdeck::judge::Minute {
                requests,
                errors: Some((requests * rate).round()),
                p99: Some(0.2),
            },
        ));
    }
}

/// Runs the world minute by minute for at most `minutes`: ECS's hook invocations answered by
/// `ecs-hook` (with the rule's weights moved as ECS shifts), the reconcile loop every minute,
/// ALB samples recorded at each minute's share; stops when `done` holds.
fn run_native(
    h: &H,
    arn: &str,
    canary_rate: f64,
    minutes: i64,
    done: impl Fn(&H) -> bool,
) -> Vec<String> {
    let log = look_log(h);
    run_native_with(
        h,
        &log,
        arn,
        canary_rate,
        minutes,
        &[],
        false,
        |_, _, _| {},
        done,
    )
}

/// The judge tells the new revision's target group from the stable one's by the production
/// rule read before ECS moves production traffic, judges ECS's 10% canary step from
/// GetMetricData, and a canary answering 8% errors is stopped (StopServiceDeployment); ECS
/// rolls back and the record ends ROLLED_BACK with the verdict's figures as its reason.
#[test]
fn an_ecs_native_canary_worse_than_the_stable_revision_is_rolled_back_by_the_judge() {
    let mut h = native_judged(r#"{"type":"canary","steps":[10,100],"bake_minutes":5}"#);
    let before = h.w().ecs.describe("svc").expect("svc").task_definition;
    let (id, arn) = h.push_native("v2", 'a');
    let answers = run_native(&h, &arn, 0.08, 40, |h| !h.get(&id).status().is_active());
    let d = h.get(&id);
    let groups = d
        .native
        .as_ref()
        .and_then(|n| n.judged_groups.clone())
        .expect("told apart");
    assert_eq!(
        (groups.canary.as_str(), groups.stable.as_str()),
        (TG_GREEN, TG_BLUE)
    );
    assert_eq!(
        d.status(),
        Status::RolledBack,
        "{:?}\n{answers:?}",
        d.reason
    );
    let reason = d.reason.clone().unwrap_or_default();
    let trail = audit(&d).join("\n");
    assert!(trail.contains("canary judge fail"), "{trail}");
    assert!(
        !answers
            .iter()
            .any(|a| a.starts_with("PRODUCTION_TRAFFIC_SHIFT") && a.contains("100")),
        "ECS never shifted on: {answers:?}"
    );
    assert_eq!(
        h.w().ecs.describe("svc").expect("svc").task_definition,
        before,
        "{reason}"
    );
}

/// A canary as good as the stable revision: the hook before ECS's next shift holds it
/// (IN_PROGRESS) until the judge has a verdict taken after the step's bake, then lets ECS go on
/// to 100% and the rollout succeeds; the judge's reads are one GetMetricData per look.
#[test]
fn an_ecs_native_canary_as_good_as_the_stable_revision_passes_after_its_bake() {
    let mut h = native_judged(r#"{"type":"canary","steps":[10,100],"bake_minutes":5}"#);
    let (id, arn) = h.push_native("v2", 'a');
    let answers = run_native(&h, &arn, 0.001, 60, |h| {
        h.get(&id).status() == Status::Succeeded
    });
    let d = h.get(&id);
    assert_eq!(d.status(), Status::Succeeded, "{:?}\n{answers:?}", d.reason);
    let trail = audit(&d).join("\n");
    assert!(trail.contains("canary judge pass"), "{trail}");
    assert!(trail.contains("compares target group web-green"), "{trail}");
    let v = d.gates.verdict.clone().expect("a verdict");
    let since = d
        .events
        .iter()
        .find(|e| {
            e.reason
                .as_deref()
                .is_some_and(|r| r.contains("10% of production traffic"))
        })
        .map(|e| e.at);
    assert!(
        since.is_none_or(|s| v.at >= s + Duration::minutes(5)),
        "the verdict that let ECS go on was taken after the bake: {v:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Review of the canary judge on ECS's own steps: schedules it must survive.

/// The (from, to) of one GetMetricData.
type Window = (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>);

/// The canary judge's reads, as (from, to) of each GetMetricData, around the simulation's.
struct LookLog {
    inner: Alarms,
    looks: Arc<Mutex<Vec<Window>>>,
}

impl flightdeck::ports::AlarmReader for LookLog {
    async fn states(&self, names: &[String]) -> PortResult<Vec<flightdeck::ports::AlarmState>> {
        self.inner.states(names).await
    }
}

impl flightdeck::ports::MetricsReader for LookLog {
    async fn alb_minutes(
        &self,
        load_balancer: &str,
        canary_target_group: &str,
        stable_target_group: &str,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    ) -> PortResult<flightdeck::judge::Samples> {
        let r = self
            .inner
            .alb_minutes(
                load_balancer,
                canary_target_group,
                stable_target_group,
                from,
                to,
            )
            .await;
        if r.is_ok() {
            self.looks.lock().unwrap().push((from, to));
        }
        r
    }
}

/// As `run_native`, with: ECS answering the stages in `unhooked` itself (ecs-hook is not
/// registered for them), ECS's events lost when `lose`, the judge's looks logged by `log`, and
/// `each` called after every 5 s step with the payload the hook was invoked with then.
#[allow(clippy::too_many_arguments)]
fn run_native_with(
    h: &H,
    log: &LookLog,
    arn: &str,
    canary_rate: f64,
    minutes: i64,
    unhooked: &[&str],
    lose: bool,
    mut each: impl FnMut(&H, &LookLog, Option<&serde_json::Value>),
    done: impl Fn(&H) -> bool,
) -> Vec<String> {
    let mut answers = Vec::new();
    for _ in 0..minutes * 12 {
        if done(h) {
            break;
        }
        let due = {
            let w = h.w();
            w.ecs.service_deployments[arn]
                .hook
                .as_ref()
                .is_some_and(|hook| hook.asked.is_none() && hook.due <= w.now)
        };
        let mut invoked = None;
        if due {
            let payload = h.hook_due(arn, 5);
            let stage = payload["lifecycleStage"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let execution = payload["executionId"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let (status, delay) = if unhooked.contains(&stage.as_str()) {
                ("SUCCEEDED".to_string(), 0)
            } else {
                let answer = block_on(flightdeck::handlers::ecs_hook::handle(
                    &h.ports, log, &payload,
                ))
                .expect("answered");
                invoked = Some(payload.clone());
                (
                    answer.hook_status.name().to_string(),
                    answer.call_back_delay.unwrap_or(30),
                )
            };
            answers.push(format!("{stage} {status}"));
            let mut w = h.w();
            let now = w.now;
            if let Some(sd) = w.ecs.service_deployments.get_mut(arn) {
                sd.answered(&execution, Some((status.as_str(), delay)), now);
            }
        }
        each(h, log, invoked.as_ref());
        let percent = h.w().ecs.service_deployments[arn].percent;
        {
            let mut w = h.w();
            if let Some(RuleAction::Forward { groups, .. }) =
                w.elb.rules.get_mut(RULE).and_then(|a| a.first_mut())
            {
                *groups = vec![
                    (TG_BLUE.into(), 100 - u32::from(percent)),
                    (TG_GREEN.into(), u32::from(percent)),
                ];
            }
        }
        let minute_before = h.w().now.timestamp() / 60;
        h.advance(5, false, lose);
        if h.w().now.timestamp() / 60 != minute_before {
            if let Err(e) = block_on(shifter::handle(&h.ports, log)) {
                eprintln!("shifter: {e}");
            }
            if percent > 0 && percent < 100 {
                alb_minute(h, percent, canary_rate);
            }
        }
    }
    answers
}

fn look_log(h: &H) -> LookLog {
    LookLog {
        inner: Alarms(h.sim.clone()),
        looks: Arc::default(),
    }
}

/// A late (retried) invocation of the 10% step's PRODUCTION_TRAFFIC_SHIFT, coming after the
/// judge passed that step and ECS moved on to 100%, takes the record back to 10% with a fresh
/// window; the next word of ECS (100%) then rolls back a good rollout as "unjudged".
#[test]
fn a_late_hook_invocation_of_a_passed_step_does_not_roll_back_a_good_ecs_native_canary() {
    let mut h = native_judged(r#"{"type":"canary","steps":[10,100],"bake_minutes":5}"#);
    let log = look_log(&h);
    let (id, arn) = h.push_native("v2", 'a');
    let mut first_step: Option<serde_json::Value> = None;
    let mut replayed = false;
    let answers = run_native_with(
        &h,
        &log,
        &arn,
        0.001,
        60,
        &[],
        false,
        |h, log, invoked| {
            let Some(p) = invoked else { return };
            let stage = p["lifecycleStage"].as_str().unwrap_or_default();
            let percent = h.get(&id).traffic_percent;
            if stage == "PRODUCTION_TRAFFIC_SHIFT" && first_step.is_none() && percent == 10 {
                first_step = Some(p.clone());
            }
            if stage == "PRODUCTION_TRAFFIC_SHIFT" && percent == 100 && !replayed {
                // Lambda retries the earlier invocation (or it was delayed): ECS ignores its
                // answer, Flightdeck applies what it says.
                replayed = true;
                let late = first_step.clone().expect("the 10% step's invocation");
                let _ = block_on(flightdeck::handlers::ecs_hook::handle(&h.ports, log, &late));
            }
        },
        |h| !h.get(&id).status().is_active(),
    );
    assert!(replayed, "harness: never got to 100%: {answers:?}");
    let d = h.get(&id);
    assert_eq!(
        d.status(),
        Status::Succeeded,
        "{:?}\n{answers:?}\n{}",
        d.reason,
        full_audit(&h, &id).join("\n")
    );
}

/// ecs-hook registered without the production stages (README: the rollout is then rolled back
/// when ECS moves past a step the judge has not passed): ECS's events lost, only the reconcile
/// loop sees ECS's shares. ECS bakes 5 min from its shift and moves to 100%; the reconcile loop,
/// which first saw 10% up to a minute later, takes its look at the end of the step's window with
/// the record it loaded (still 10%) after ECS moved on, records it as the 10% step's passing
/// verdict, and only then reads ECS at 100%: the shift nobody held is let through.
#[test]
fn ecs_moving_past_a_step_before_the_reconcile_loop_judged_it_is_rolled_back() {
    let mut h = native_judged(r#"{"type":"canary","steps":[10,100],"bake_minutes":5}"#);
    let log = look_log(&h);
    let (id, arn) = h.push_native("v2", 'a');
    let answers = run_native_with(
        &h,
        &log,
        &arn,
        0.001,
        60,
        &[
            "PRE_PRODUCTION_TRAFFIC_SHIFT",
            "PRODUCTION_TRAFFIC_SHIFT",
            "POST_PRODUCTION_TRAFFIC_SHIFT",
        ],
        true,
        |_, _, _| {},
        |h| !h.get(&id).status().is_active(),
    );
    let d = h.get(&id);
    let trail = full_audit(&h, &id).join("\n");
    let seen: Vec<String> = h
        .trace_tail(400)
        .lines()
        .filter(|l| l.contains("ecs: svc") || l.contains("GetMetricData"))
        .map(str::to_string)
        .collect();
    assert_ne!(
        d.status(),
        Status::Succeeded,
        "ECS shifted to 100% with no hook holding the 10% step, yet it succeeded:\n{}\n{answers:?}\n{trail}",
        seen.join("\n")
    );
    assert!(
        d.reason
            .as_deref()
            .is_some_and(|r| r.contains("PRE_PRODUCTION_TRAFFIC_SHIFT")),
        "{:?}\n{trail}",
        d.reason
    );
}

/// Bonferroni over a step (README, "the judge's false-fail rate is bounded by the confidence
/// over a whole step"): each look during the bake is held to (1 - confidence) / (2 x
/// bake_minutes), the look at its end to (1 - confidence) / 2. On ecs-native the reconcile loop
/// and every hook invocation both look, so a step gets more looks than that split pays for.
#[test]
fn an_ecs_native_step_gets_no_more_judge_looks_than_its_bonferroni_split_pays_for() {
    let mut h = native_judged(r#"{"type":"canary","steps":[10,100],"bake_minutes":5}"#);
    let log = look_log(&h);
    let (id, arn) = h.push_native("v2", 'a');
    let answers = run_native_with(
        &h,
        &log,
        &arn,
        0.001,
        60,
        &[],
        false,
        |_, _, _| {},
        |h| !h.get(&id).status().is_active(),
    );
    let d = h.get(&id);
    assert_eq!(d.status(), Status::Succeeded, "{:?}\n{answers:?}", d.reason);
    let looks = log.looks.lock().unwrap().clone();
    let from = looks.first().expect("looks").0;
    let bake = Duration::minutes(5);
    let during = looks
        .iter()
        .filter(|(f, to)| *f == from && *to < from + bake)
        .count();
    let end = looks
        .iter()
        .filter(|(f, to)| *f == from && *to >= from + bake)
        .count();
    assert!(
        during <= 5 && end <= 1,
        "the 10% step was looked at {during} times during its 5 min bake and {end} times at \
         its end (Bonferroni pays for 5 and 1): {looks:?}\n{answers:?}"
    );
}

/// The same split on a rollout started outside Flightdeck whose ECS strategy bakes its canary
/// longer (12 min) than the registration's `bake_minutes` (5): past the registration's bake
/// every reconcile tick takes another look "at the end", each held to (1 - confidence) / 2,
/// until ECS asks the hook 7 minutes later.
#[test]
fn an_outside_rollout_baking_longer_than_the_registration_gets_one_end_look_per_step() {
    let h = native_judged(r#"{"type":"canary","steps":[10,100],"bake_minutes":5}"#);
    let log = look_log(&h);
    let arn = {
        let mut w = h.w();
        let td = w
            .ecs
            .register("svc", "app", &image("svc", &digest('e')), None);
        w.ecs.quality.insert(digest('e'), Quality::Good);
        let now = w.now;
        let strategy = flightdeck::native::NativeStrategy::Canary {
            canary_percent: 10,
            canary_bake_minutes: 12,
        };
        w.ecs
            .update_service_native("svc", &td, &strategy, now)
            .expect("console update")
            .expect("a service deployment")
    };
    let id = flightdeck::lifecycle::external_deployment_id(&arn);
    let answers = run_native_with(
        &h,
        &log,
        &arn,
        0.001,
        60,
        &[],
        false,
        |_, _, _| {},
        |h| {
            h.w()
                .store
                .deployments
                .get(&id)
                .is_some_and(|d| !d.status().is_active())
        },
    );
    let d = h.get(&id);
    assert_eq!(d.status(), Status::Succeeded, "{:?}\n{answers:?}", d.reason);
    let looks = log.looks.lock().unwrap().clone();
    let from = looks.first().expect("looks").0;
    let bake = Duration::minutes(5);
    let during = looks
        .iter()
        .filter(|(f, to)| *f == from && *to < from + bake)
        .count();
    let end = looks
        .iter()
        .filter(|(f, to)| *f == from && *to >= from + bake)
        .count();
    assert!(
        during <= 5 && end <= 1,
        "the 10% step was looked at {during} times during its 5 min bake and {end} times at \
         its end, each of these at half the step's error budget (Bonferroni pays for 5 and 1)"
    );
}

//! Scenarios generated from the seed: which services are registered (a `rolling` service, an
//! `alb-weights` blue/green pair, or both), what is pushed when and how good each image is, what
//! operators do, and how unreliable the world is.

use chrono::{DateTime, Duration, Utc};
use flightdeck::registration::Registration;

use super::ecs::Quality;
use super::world::{ACCOUNT, Faults, REGION, RuleAction, start_time};

pub const CLUSTER: &str = "sim";
pub const CONTAINER: &str = "app";
pub const ADMIN: &str = "arn:aws:iam::123456789012:role/platform-admin";
pub const DEPLOYER: &str = "arn:aws:sts::123456789012:assumed-role/ci-deployer/build-17";
pub const APPROVER: &str = "arn:aws:sts::123456789012:assumed-role/release-approver/alice";
/// Every phase's progress deadline (DESIGN.md default).
pub const PROGRESS_DEADLINE_MINUTES: i64 = 10;

#[derive(Clone, Debug)]
pub struct Colour {
    pub service: String,
    pub target_group: String,
}

#[derive(Clone, Debug)]
pub struct AlbPlan {
    pub rule: String,
    pub blue: Colour,
    pub green: Colour,
    pub actions: Vec<RuleAction>,
    pub scale_down_after: u32,
}

#[derive(Clone, Debug)]
pub struct RegPlan {
    pub registration: Registration,
    pub repository: String,
    pub family: String,
    /// The desired count of the service (of the live colour for `alb-weights`).
    pub desired: u32,
    pub alb: Option<AlbPlan>,
    pub alarm: Option<String>,
    /// The rolling service, or both colours.
    pub services: Vec<String>,
    /// How long a deployment may stay in flight: progress deadline, every step's bake, and the
    /// rollback's deadline, plus a minute of slack per step for the reconcile loop's cadence.
    pub budget: Duration,
    pub steps: usize,
}

impl RegPlan {
    pub fn key(&self) -> (String, String) {
        (
            self.registration.service.clone(),
            self.registration.environment.clone(),
        )
    }
}

#[derive(Clone, Debug)]
pub struct PushPlan {
    pub at: DateTime<Utc>,
    pub reg: usize,
    pub digest: String,
    pub tag: String,
    pub quality: Quality,
    /// Started through `POST /deployments` (with an Idempotency-Key) instead of an ECR push.
    pub via_api: bool,
    pub released: bool,
    /// What the image's ECR scan finds (registrations with `gates.scan`).
    pub scan: ScanOutcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanOutcome {
    /// Scanned, nothing above LOW.
    Clean,
    /// Scanned, a CRITICAL finding.
    Blocking,
    /// No scan result ever comes.
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorAction {
    Rollback,
    Abort,
    Promote,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub regs: Vec<RegPlan>,
    pub pushes: Vec<PushPlan>,
    pub operator: Vec<(DateTime<Utc>, usize, OperatorAction)>,
    pub faults: Faults,
    pub fault_level: u8,
    /// Chance that a success is followed by the next push within `scale_down_after_minutes`.
    pub back_to_back: f64,
    pub noisy_end: DateTime<Utc>,
    pub quiet_end: DateTime<Utc>,
}

fn hex64(rng: &mut fastrand::Rng) -> String {
    (0..64)
        .map(|_| char::from_digit(rng.u32(0..16), 16).unwrap_or('0'))
        .collect()
}

fn pick<T: Clone>(rng: &mut fastrand::Rng, items: &[T]) -> T {
    items[rng.usize(0..items.len())].clone()
}

fn rolling(rng: &mut fastrand::Rng, environment: &str, approval: bool) -> RegPlan {
    let desired = rng.u32(1..=3);
    let bake = rng.u32(0..=3);
    let alarm = rng.f64() < 0.8;
    let json = format!(
        r#"{{"cluster":"{CLUSTER}","repository":"api","container":"{CONTAINER}",
            "engine":{{"type":"rolling","service":"api"}},
            "strategy":{{"type":"all-at-once","bake_minutes":{bake}}},
            "gates":{{"alarms":{alarms},"max_failed_tasks":{max_failed},"approval":{approval}}},
            "deployers":["arn:aws:iam::{ACCOUNT}:role/ci-deployer"],
            "approvers":["arn:aws:iam::{ACCOUNT}:role/release-approver"]}}"#,
        alarms = if alarm { r#"["api-5xx"]"# } else { "[]" },
        max_failed = rng.u32(2..=3),
    );
    let registration = Registration::parse("api", environment, &json)
        .unwrap_or_else(|e| panic!("harness: rolling registration: {e}"));
    RegPlan {
        registration,
        repository: "api".into(),
        family: "api".into(),
        desired,
        alb: None,
        alarm: alarm.then(|| "api-5xx".to_string()),
        services: vec!["api".into()],
        budget: Duration::minutes(2 * PROGRESS_DEADLINE_MINUTES + i64::from(bake) + 3),
        steps: 1,
    }
}

fn alb(rng: &mut fastrand::Rng, environment: &str, approval: bool) -> RegPlan {
    let desired = rng.u32(1..=3);
    let strategy = match rng.u32(0..4) {
        0 => format!(
            r#"{{"type":"canary","steps":[10,100],"bake_minutes":{}}}"#,
            rng.u32(1..=4)
        ),
        1 => format!(
            r#"{{"type":"canary","steps":[5,25,100],"bake_minutes":{}}}"#,
            rng.u32(1..=3)
        ),
        2 => format!(
            r#"{{"type":"linear","step_percent":{},"interval_minutes":{}}}"#,
            pick(rng, &[25, 34, 50]),
            rng.u32(1..=3)
        ),
        _ => format!(
            r#"{{"type":"all-at-once","bake_minutes":{}}}"#,
            rng.u32(0..=3)
        ),
    };
    let scale_down_after = rng.u32(1..=6);
    let alarm = rng.f64() < 0.8;
    let tg = |name: &str, n: u32| {
        format!("arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/{name}/{n:016x}")
    };
    let blue = Colour {
        service: "web-blue".into(),
        target_group: tg("web-blue", 0xb1),
    };
    let green = Colour {
        service: "web-green".into(),
        target_group: tg("web-green", 0x92),
    };
    let rule = format!(
        "arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:listener-rule/app/sim/50dc6c495c0c9188/f2f7dc8efc522ab2/9683b2d02a6cabee"
    );
    let json = format!(
        r#"{{"cluster":"{CLUSTER}","repository":"web","container":"{CONTAINER}",
            "engine":{{"type":"alb-weights","listener_rule_arn":"{rule}",
                "blue":{{"service":"{}","target_group_arn":"{}"}},
                "green":{{"service":"{}","target_group_arn":"{}"}},
                "scale_down_after_minutes":{scale_down_after}}},
            "strategy":{strategy},
            "gates":{{"alarms":{alarms},"max_failed_tasks":{max_failed},"approval":{approval}}},
            "deployers":["arn:aws:iam::{ACCOUNT}:role/ci-deployer"],
            "approvers":["arn:aws:iam::{ACCOUNT}:role/release-approver"]}}"#,
        blue.service,
        blue.target_group,
        green.service,
        green.target_group,
        alarms = if alarm { r#"["web-5xx"]"# } else { "[]" },
        max_failed = rng.u32(2..=3),
    );
    let registration = Registration::parse("web", environment, &json)
        .unwrap_or_else(|e| panic!("harness: alb registration: {e}"));
    let steps = registration.traffic_steps().len();
    let bake = i64::from(registration.bake_minutes());
    // Half of the rules authenticate first and keep sessions on a target group; the rest forward
    // only, sometimes with stickiness.
    let stickiness = (rng.f64() < 0.6).then_some(3600);
    let forward = RuleAction::Forward {
        groups: vec![
            (blue.target_group.clone(), 100),
            (green.target_group.clone(), 0),
        ],
        stickiness,
    };
    let actions = if rng.bool() {
        vec![
            RuleAction::AuthenticateOidc {
                issuer: "https://idp.example.com".into(),
                client_id: "flightdeck-sim".into(),
            },
            forward,
        ]
    } else {
        vec![forward]
    };
    RegPlan {
        registration,
        repository: "web".into(),
        family: "web".into(),
        desired,
        alb: Some(AlbPlan {
            rule,
            blue: blue.clone(),
            green: green.clone(),
            actions,
            scale_down_after,
        }),
        alarm: alarm.then(|| "web-5xx".to_string()),
        services: vec![blue.service, green.service],
        // The deadlines Flightdeck keeps: the rollout's progress deadline; each step's bake and
        // then, for the look at the new colour that judges it (a minute per try; under the
        // noisy phase's faults tries fail), at most the progress deadline before it rolls back;
        // the rollback deadline; three ticks.
        budget: Duration::minutes(
            2 * PROGRESS_DEADLINE_MINUTES + steps as i64 * (bake + PROGRESS_DEADLINE_MINUTES) + 3,
        ),
        steps,
    }
}

/// An `ecs-native` service: ECS's own BLUE_GREEN, LINEAR or CANARY strategy with `ecs-hook` as
/// its lifecycle hook (simulated in `ecs::NativeSd`).
pub fn native(rng: &mut fastrand::Rng, environment: &str, approval: bool) -> RegPlan {
    let desired = rng.u32(1..=3);
    let strategy = match rng.u32(0..3) {
        0 => format!(
            r#"{{"type":"all-at-once","bake_minutes":{}}}"#,
            rng.u32(0..=3)
        ),
        1 => format!(
            r#"{{"type":"linear","step_percent":{},"interval_minutes":{}}}"#,
            pick(rng, &[25, 34, 50]),
            rng.u32(1..=2)
        ),
        _ => format!(
            r#"{{"type":"canary","steps":[{},100],"bake_minutes":{}}}"#,
            pick(rng, &[5, 10, 20]),
            rng.u32(1..=3)
        ),
    };
    let alarm = rng.f64() < 0.8;
    let json = format!(
        r#"{{"cluster":"{CLUSTER}","repository":"svc","container":"{CONTAINER}",
            "engine":{{"type":"ecs-native","service":"svc"}},
            "strategy":{strategy},
            "gates":{{"alarms":{alarms},"max_failed_tasks":{max_failed},"approval":{approval}}},
            "deployers":["arn:aws:iam::{ACCOUNT}:role/ci-deployer"],
            "approvers":["arn:aws:iam::{ACCOUNT}:role/release-approver"]}}"#,
        alarms = if alarm { r#"["svc-5xx"]"# } else { "[]" },
        max_failed = rng.u32(2..=3),
    );
    let registration = Registration::parse("svc", environment, &json)
        .unwrap_or_else(|e| panic!("harness: ecs-native registration: {e}"));
    let steps = registration.traffic_steps().len();
    let bake = i64::from(registration.bake_minutes());
    RegPlan {
        registration,
        repository: "svc".into(),
        family: "svc".into(),
        desired,
        alb: None,
        alarm: alarm.then(|| "svc-5xx".to_string()),
        services: vec!["svc".into()],
        // ECS's own pace (scale-up, each step's bake, the hooks' answers a minute apart at
        // worst) within the progress deadline Flightdeck keeps per stage, then the rollback's
        // deadline and three ticks; an approval's wait is the approver's, not counted.
        budget: Duration::minutes(
            2 * PROGRESS_DEADLINE_MINUTES + steps as i64 * (bake + PROGRESS_DEADLINE_MINUTES) + 3,
        ),
        steps,
    }
}

/// Adds the gates of `gates.watch_minutes`, `gates.scan`, `freeze` and (alb-weights with bakes
/// of 3 minutes or more) `gates.analysis` to some registrations.
fn add_gates(rng: &mut fastrand::Rng, reg: &mut RegPlan) {
    let spec = &mut reg.registration.spec;
    if rng.f64() < 0.35 {
        let watch = rng.u32(3..=8);
        spec.gates.watch_minutes = watch;
        // A watch rollback after success: the watch, then the rollback's deadline.
        reg.budget += Duration::minutes(i64::from(watch) + PROGRESS_DEADLINE_MINUTES);
    }
    if rng.f64() < 0.25 {
        spec.gates.scan = Some(flightdeck::scan::ScanGate {
            block_at: pick(
                rng,
                &[
                    flightdeck::scan::Severity::Critical,
                    flightdeck::scan::Severity::High,
                ],
            ),
            wait_minutes: rng.u32(2..=5),
            missing: pick(
                rng,
                &[
                    flightdeck::scan::Missing::Fail,
                    flightdeck::scan::Missing::Allow,
                ],
            ),
        });
    }
    if rng.f64() < 0.2 {
        let from = start_time() + Duration::minutes(rng.i64(0..=20));
        let to = from + Duration::minutes(rng.i64(3..=12));
        spec.freeze = Some(flightdeck::freeze::Freeze {
            timezone: pick(rng, &["Europe/Berlin", "America/New_York", "UTC"]).to_string(),
            weekly: Vec::new(),
            dates: vec![flightdeck::freeze::Dates {
                from,
                to,
                reason: Some("simulated freeze".into()),
            }],
        });
    }
    // The draw comes before the strategy's check: the seeds keep their schedules.
    if reg.alb.is_some()
        && reg.registration.bake_minutes() >= 3
        && rng.f64() < 0.6
        && !matches!(
            reg.registration.spec.strategy,
            flightdeck::registration::Strategy::AllAtOnce { .. }
        )
    {
        reg.registration.spec.gates.analysis = Some(judged());
    }
    // ecs-native CANARY steps baked 3 minutes or more: judged on the production rule's two
    // target groups (drawn last: the draws before keep their order).
    let native_canary = matches!(
        reg.registration.spec.engine,
        flightdeck::registration::Engine::EcsNative { .. }
    ) && matches!(
        reg.registration.spec.strategy,
        flightdeck::registration::Strategy::Canary { .. }
    ) && reg.registration.bake_minutes() >= 3;
    if native_canary && rng.f64() < 0.6 {
        reg.registration.spec.gates.analysis = Some(judged());
    }
    if let Err(e) = reg.registration.validate() {
        panic!("harness: gates made the registration invalid: {e}");
    }
}

/// The canary judge's settings in the simulation.
fn judged() -> flightdeck::judge::Analysis {
    flightdeck::judge::Analysis {
        min_requests: 50,
        max_error_rate_increase: 0.01,
        max_latency_increase: 0.25,
        confidence: 0.95,
        no_data: flightdeck::judge::NoData::Fail,
    }
}

fn quality(rng: &mut fastrand::Rng) -> Quality {
    match rng.u32(0..100) {
        0..55 => Quality::Good,
        55..70 => Quality::CrashExec,
        70..85 => Quality::CrashOom,
        _ => Quality::Alarming,
    }
}

pub fn generate(seed: u64) -> Scenario {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5151);
    let env = |rng: &mut fastrand::Rng| {
        if rng.f64() < 0.3 {
            ("production", true)
        } else {
            ("staging", false)
        }
    };
    let regs = match rng.u32(0..4) {
        0 => {
            let (e, a) = env(&mut rng);
            vec![rolling(&mut rng, e, a)]
        }
        1 => {
            let (e, a) = env(&mut rng);
            vec![alb(&mut rng, e, a)]
        }
        _ => {
            let (e1, a1) = env(&mut rng);
            let (e2, a2) = env(&mut rng);
            vec![rolling(&mut rng, e1, a1), alb(&mut rng, e2, a2)]
        }
    };
    // An ecs-native service beside them in some seeds, from a stream of its own so that the
    // seeds without one keep their schedules.
    let mut regs = regs;
    let mut native_rng =
        fastrand::Rng::with_seed(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x4e41_5456);
    if native_rng.f64() < 0.35 {
        let (e, a) = env(&mut native_rng);
        regs.push(native(&mut native_rng, e, a));
    }
    // The gates of issue 10 (watch window, scan, freeze, canary judge), from a stream of their
    // own, so that the seeds keep their schedules.
    let mut gates_rng =
        fastrand::Rng::with_seed(seed.wrapping_mul(0xd6e8_feb8_6659_fd93) ^ 0x4741_5445);
    for reg in regs.iter_mut() {
        add_gates(&mut gates_rng, reg);
    }
    let start = start_time();
    let mut pushes = Vec::new();
    let mut last = start;
    for (index, _) in regs.iter().enumerate() {
        let mut at = start + Duration::seconds(rng.i64(20..=180));
        for n in 0..rng.u32(1..=4) {
            pushes.push(PushPlan {
                at,
                reg: index,
                digest: format!("sha256:{}", hex64(&mut rng)),
                tag: format!("v1.{n}.{}", rng.u32(0..10)),
                quality: quality(&mut rng),
                via_api: rng.f64() < 0.2,
                released: false,
                scan: ScanOutcome::Clean,
            });
            last = last.max(at);
            at += Duration::seconds(rng.i64(60..=720));
        }
    }
    pushes.sort_by_key(|p| p.at);
    for p in pushes.iter_mut() {
        p.scan = match gates_rng.u32(0..100) {
            0..70 => ScanOutcome::Clean,
            70..88 => ScanOutcome::Blocking,
            _ => ScanOutcome::Never,
        };
    }
    let fault_level = rng.u8(0..4);
    let faults = match fault_level {
        0 => Faults::default(),
        1 => Faults {
            before: 0.01,
            lost: 0.005,
            drop: 0.003,
            event_loss: 0.01,
            event_dup: 0.05,
            event_late: 0.03,
        },
        2 => Faults {
            before: 0.03,
            lost: 0.01,
            drop: 0.008,
            event_loss: 0.03,
            event_dup: 0.1,
            event_late: 0.08,
        },
        _ => Faults {
            before: 0.06,
            lost: 0.02,
            drop: 0.015,
            event_loss: 0.08,
            event_dup: 0.2,
            event_late: 0.15,
        },
    };
    let noisy_end = last + Duration::minutes(rng.i64(15..=25));
    let mut operator = Vec::new();
    if rng.f64() < 0.35 {
        for _ in 0..rng.u32(1..=2) {
            let span = (noisy_end - start).num_seconds().max(61);
            let at = start + Duration::seconds(rng.i64(60..span));
            let action = match rng.u32(0..100) {
                0..60 => OperatorAction::Rollback,
                60..85 => OperatorAction::Abort,
                _ => OperatorAction::Promote,
            };
            operator.push((at, rng.usize(0..regs.len()), action));
        }
        operator.sort_by_key(|o| o.0);
    }
    let budget = regs
        .iter()
        .map(|r| r.budget)
        .max()
        .unwrap_or(Duration::minutes(30));
    Scenario {
        regs,
        pushes,
        operator,
        faults,
        fault_level,
        back_to_back: 0.5,
        noisy_end,
        // Long enough for one deployment still in flight and one queued behind it to finish
        // within their budgets; a settled world ends the quiet phase earlier (see `run_seed`).
        quiet_end: noisy_end + budget * 2 + Duration::minutes(10),
    }
}

impl Scenario {
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (i, r) in self.regs.iter().enumerate() {
            let engine = match &r.alb {
                Some(a) => format!(
                    "alb-weights steps {:?} bake {} scale-down {} min, rule actions {}",
                    r.registration.traffic_steps(),
                    r.registration.bake_minutes(),
                    a.scale_down_after,
                    a.actions.len()
                ),
                None => match flightdeck::native::NativeStrategy::of(&r.registration.spec.strategy)
                {
                    Ok(native)
                        if matches!(
                            r.registration.spec.engine,
                            flightdeck::registration::Engine::EcsNative { .. }
                        ) =>
                    {
                        format!("ecs-native {native:?}")
                    }
                    _ => format!("rolling bake {}", r.registration.bake_minutes()),
                },
            };
            let gates = &r.registration.spec.gates;
            out.push_str(&format!(
                "  reg {i}: {} {} desired {} {engine}, alarm {:?}, approval {}, budget {} min; \
                 watch {} min, scan {:?}, freeze {:?}, judge {}\n",
                r.registration.service,
                r.registration.environment,
                r.desired,
                r.alarm,
                gates.approval,
                r.budget.num_minutes(),
                gates.watch_minutes,
                gates
                    .scan
                    .as_ref()
                    .map(|s| (s.block_at, s.wait_minutes, s.missing)),
                r.registration
                    .spec
                    .freeze
                    .as_ref()
                    .and_then(|f| f.dates.first())
                    .map(|d| (
                        (d.from - start_time()).num_minutes(),
                        (d.to - start_time()).num_minutes()
                    )),
                gates.analysis.is_some()
            ));
        }
        for p in &self.pushes {
            out.push_str(&format!(
                "  push {} at +{}s to reg {}: {} ({}, scan {:?}){}\n",
                p.tag,
                (p.at - start_time()).num_seconds(),
                p.reg,
                &p.digest[7..19],
                p.quality.name(),
                p.scan,
                if p.via_api { " via API" } else { "" }
            ));
        }
        for (at, reg, action) in &self.operator {
            out.push_str(&format!(
                "  operator {action:?} on reg {reg} at +{}s\n",
                (*at - start_time()).num_seconds()
            ));
        }
        out.push_str(&format!(
            "  faults level {} {:?}; noisy until +{} min, quiet until +{} min\n",
            self.fault_level,
            self.faults,
            (self.noisy_end - start_time()).num_minutes(),
            (self.quiet_end - start_time()).num_minutes()
        ));
        out
    }
}

//! The demo's ecs-native part: ECS's own CANARY deployments gated by Flightdeck's lifecycle
//! hook. Neither emulator serves ECS service deployments (moto has none; ministack answers
//! DescribeServiceDeployments with an empty stub), so this part runs on the simulation's ECS
//! (`sim::ecs`), which walks a service deployment's lifecycle stages and calls the hook as ECS
//! does. Everything else is the real code: `on-image-push`, `ecs-hook`, `on-alarm`, the
//! reconcile loop and the API's approve route, over the simulation's in-memory store.

use std::sync::{Arc, Mutex};

use chrono::Duration;
use flightdeck::api::{self, ApiConfig, ApiRequest};
use flightdeck::deployment::{Deployment, Status, push_deployment_id};
use flightdeck::handlers::{Ports, ecs_hook, on_alarm, on_ecs_event, on_image_push, shifter};
use flightdeck::registration::Registration;

use crate::Result;
use crate::sim::ecs::{self, Quality};
use crate::sim::events;
use crate::sim::ports::{Alarms, Ecs, Images, Sim, SimClock, Sns, Store, Traffic};
use crate::sim::scenario::CLUSTER;
use crate::sim::world::{ACCOUNT, Alarm, REGION, Target, World};
use crate::timeline;

const DEPLOYER: &str = "arn:aws:iam::123456789012:role/ci-deployer";
const APPROVER: &str = "arn:aws:sts::123456789012:assumed-role/release-approver/dana";

type SimPorts = Ports<Store, Ecs, Traffic, Sns, SimClock, Images>;

struct Native {
    sim: Sim,
    ports: SimPorts,
    alarms: Alarms,
    pushes: u32,
}

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

impl Native {
    fn new() -> Native {
        let sim = Sim(Arc::new(Mutex::new(World::new(7, false))));
        {
            let mut w = sim.lock();
            let json = format!(
                r#"{{"cluster":"{CLUSTER}","repository":"checkout-api","container":"app",
                    "engine":{{"type":"ecs-native","service":"checkout-api"}},
                    "strategy":{{"type":"canary","steps":[10,100],"bake_minutes":2}},
                    "gates":{{"alarms":["checkout-api-5xx"],"max_failed_tasks":3,"approval":true}},
                    "deployers":["{DEPLOYER}"],
                    "approvers":["arn:aws:iam::{ACCOUNT}:role/release-approver"]}}"#
            );
            if let Ok(reg) = Registration::parse("checkout-api", "production", &json) {
                w.store
                    .registrations
                    .insert(("checkout-api".into(), "production".into()), reg);
            }
            let image = format!(
                "{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/checkout-api@{}",
                digest('0')
            );
            let td = w.ecs.register("checkout-api", "app", &image, None);
            w.ecs.create_service(CLUSTER, "checkout-api", &td, 2, None);
            w.alarms.insert(
                "checkout-api-5xx".into(),
                Alarm {
                    name: "checkout-api-5xx".into(),
                    state: "OK".into(),
                    reason: "Threshold Crossed: no datapoints were greater than the threshold"
                        .into(),
                    bad_since: None,
                    good_since: None,
                    registration: 0,
                },
            );
            let now = w.now;
            w.ecs.settle_initial(now);
        }
        Native {
            ports: Ports {
                store: Store(sim.clone()),
                ecs: Ecs(sim.clone()),
                traffic: Traffic(sim.clone()),
                notifier: Sns(sim.clone()),
                clock: SimClock(sim.clone()),
                images: Images(sim.clone()),
            },
            alarms: Alarms(sim.clone()),
            sim,
            pushes: 0,
        }
    }

    fn record(&self, id: &str) -> Result<Deployment> {
        let w = self.sim.lock();
        Ok(w.store
            .deployments
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no deployment {id}"))?)
    }

    /// A push of `tag` (image `d`) through `on-image-push`; the deployment's id.
    async fn push(&mut self, tag: &str, d: char) -> Result<String> {
        self.pushes += 1;
        let event_id = format!("evt-demo-native-{}", self.pushes);
        let body = {
            let mut w = self.sim.lock();
            w.ecs.quality.insert(digest(d), Quality::Good);
            events::image_push(event_id.clone(), w.now, "checkout-api", &digest(d), tag)
        };
        on_image_push::handle(&self.ports, body).await?;
        Ok(push_deployment_id("checkout-api", "production", &event_id))
    }

    /// Five seconds of ECS: it walks its stages; the hook answers every stage ECS waits on; ECS's
    /// events reach `on-ecs-event`; the reconcile loop runs as each minute turns.
    async fn tick(&self) -> Result<Vec<String>> {
        let (crossed, hooks) = {
            let mut w = self.sim.lock();
            let before = w.now;
            w.now += Duration::seconds(5);
            ecs::advance(&mut w);
            let now = w.now;
            let mut hooks = Vec::new();
            for sd in w.ecs.service_deployments.values_mut() {
                if sd
                    .hook
                    .as_ref()
                    .is_some_and(|k| k.asked.is_none() && k.due <= now)
                {
                    let payload = crate::sim::hook_payload(sd, now);
                    if let Some(k) = sd.hook.as_mut() {
                        k.asked = payload["executionId"].as_str().map(str::to_string);
                    }
                    hooks.push((sd.arn.clone(), payload));
                }
            }
            (before.timestamp() / 60 != now.timestamp() / 60, hooks)
        };
        let mut answers = Vec::new();
        for (arn, payload) in hooks {
            let answer = ecs_hook::handle(&self.ports, &self.alarms, &payload).await?;
            let status = answer.hook_status.name();
            answers.push(format!(
                "{} -> {status}",
                payload["lifecycleStage"].as_str().unwrap_or("?")
            ));
            let execution = payload["executionId"].as_str().unwrap_or_default();
            let mut w = self.sim.lock();
            let now = w.now;
            if let Some(sd) = w.ecs.service_deployments.get_mut(&arn) {
                let delay = answer.call_back_delay.unwrap_or(30);
                sd.answered(execution, Some((status, delay)), now);
            }
        }
        loop {
            let next = {
                let mut w = self.sim.lock();
                let first = (0..w.bus.len()).min_by_key(|&i| w.bus[i].seq);
                first.map(|i| w.bus.remove(i))
            };
            let Some(e) = next else { break };
            if matches!(e.target, Target::Ecs) {
                on_ecs_event::handle(&self.ports, e.body).await?;
            }
        }
        if crossed {
            shifter::handle(&self.ports, &self.alarms).await?;
        }
        Ok(answers)
    }

    /// Runs until `done` holds (at most `minutes`), printing the hook's answers as they change.
    async fn run_until(&self, minutes: i64, done: impl Fn(&Native) -> bool) -> Result<()> {
        let mut last = String::new();
        for _ in 0..minutes * 12 {
            if done(self) {
                return Ok(());
            }
            for answer in self.tick().await? {
                if answer != last {
                    println!("  ECS calls ecs-hook: {answer}");
                    last = answer;
                }
            }
        }
        if done(self) {
            return Ok(());
        }
        let records: Vec<Deployment> = self
            .sim
            .lock()
            .store
            .deployments
            .values()
            .cloned()
            .collect();
        Err(format!(
            "nothing happened within {minutes} simulated minutes:\n{}",
            timeline::merged(&records)
        )
        .into())
    }

    fn status(&self, id: &str) -> Status {
        self.record(id).map_or(Status::Pending, |d| d.status())
    }

    fn serving(&self) -> String {
        let w = self.sim.lock();
        w.ecs
            .describe("checkout-api")
            .map(|s| {
                let td = s.task_definition;
                td.rsplit('/').next().unwrap_or(&td).to_string()
            })
            .unwrap_or_default()
    }
}

fn step(text: &str) {
    println!("\n▶ {text}");
}

/// Part three: ECS's own canary held at its hook for approval, then one rolled back by an alarm.
pub async fn run() -> Result<()> {
    println!("\n════════ ECS's own canary (ecs-native), gated by ecs-hook ════════");
    println!(
        "On the simulation's ECS: the emulators serve no ECS service deployments. Service \
         checkout-api in production, CANARY 10% with a 2 min bake, lifecycle hook at every \
         stage, approval required, gated by checkout-api-5xx."
    );
    let mut demo = Native::new();

    step("CI pushes checkout-api:v3.0.0: UpdateService with ECS's CANARY strategy");
    let first = demo.push("v3.0.0", 'a').await?;
    println!("  deployment {first} {}", demo.status(&first));
    demo.run_until(20, |n| {
        n.record(&first)
            .is_ok_and(|d| d.native.as_ref().is_some_and(|x| x.approval_asked))
    })
    .await?;
    println!("  held at the stage before production traffic; deployment.approval_required sent");

    step("the CI role tries to approve (it may deploy, not approve)");
    let config = ApiConfig {
        admins: vec![],
        region: REGION.into(),
        ..ApiConfig::default()
    };
    let approve = |caller: &str| ApiRequest {
        method: "POST".into(),
        path: format!("/deployments/{first}/approve"),
        caller: Some(caller.into()),
        account: Some(ACCOUNT.into()),
        ..ApiRequest::default()
    };
    let own = api::handle(&demo.ports, &config, &approve(DEPLOYER)).await;
    println!(
        "  POST /deployments/{first}/approve -> {} {}",
        own.status, own.body["error"]["message"]
    );
    step("a release approver approves through the API; ECS's next hook call goes on");
    let ok = api::handle(&demo.ports, &config, &approve(APPROVER)).await;
    println!("  POST /deployments/{first}/approve -> {}", ok.status);
    demo.run_until(30, |n| n.status(&first) == Status::Succeeded)
        .await?;
    println!(
        "  deployment {first} SUCCEEDED; ECS serves {}",
        demo.serving()
    );

    step("CI pushes checkout-api:v3.1.0; it is approved at the hook as before");
    let second = demo.push("v3.1.0", 'b').await?;
    demo.run_until(20, |n| {
        n.record(&second)
            .is_ok_and(|d| d.native.as_ref().is_some_and(|x| x.approval_asked))
    })
    .await?;
    let approve_second = ApiRequest {
        path: format!("/deployments/{second}/approve"),
        ..approve(APPROVER)
    };
    api::handle(&demo.ports, &config, &approve_second).await;
    demo.run_until(20, |n| {
        n.record(&second)
            .is_ok_and(|d| d.traffic_percent > 0 && d.status() == Status::Shifting)
    })
    .await?;
    println!(
        "  ECS shifts {}% of production traffic to the canary and bakes",
        demo.record(&second)?.traffic_percent
    );

    step("the 5xx alarm fires on the canary (EventBridge -> on-alarm): StopServiceDeployment");
    let reason = "Threshold Crossed: 1 out of the last 1 datapoints [14.0] was greater than the \
                  threshold (5.0)";
    let body = {
        let mut w = demo.sim.lock();
        if let Some(alarm) = w.alarms.get_mut("checkout-api-5xx") {
            alarm.state = "ALARM".into();
            alarm.reason = reason.into();
        }
        events::alarm_state_change(&events::AlarmEvent {
            id: "evt-demo-native-alarm".into(),
            at: w.now,
            alarm: "checkout-api-5xx",
            state: "ALARM",
            previous: "OK",
            reason,
            cluster: CLUSTER,
            service: "checkout-api",
        })
    };
    on_alarm::handle(&demo.ports, body).await?;
    println!("  deployment {second} {}", demo.status(&second));
    demo.run_until(20, |n| n.status(&second) != Status::RollingBack)
        .await?;
    println!(
        "  deployment {second} {}; ECS serves {} again",
        demo.status(&second),
        demo.serving()
    );

    let records = [demo.record(&first)?, demo.record(&second)?];
    println!("\n══ Timeline (from the deployment records) ══");
    print!("{}", timeline::merged(&records));
    println!("\n══ Alerts published ══");
    let alerts: Vec<(String, String)> = {
        let w = demo.sim.lock();
        w.sns
            .iter()
            .map(|p| {
                (
                    p.event_type.clone(),
                    p.deployment_id.clone().unwrap_or_default(),
                )
            })
            .collect()
    };
    for (event_type, id) in &alerts {
        println!("  {event_type:<32} {id}");
    }
    if records[0].status() != Status::Succeeded || records[1].status() != Status::RolledBack {
        return Err(format!(
            "native canaries ended {} and {}",
            records[0].status(),
            records[1].status()
        )
        .into());
    }
    println!(
        "\nECS's own canary: the first held at its hook until a second person approved, then \
         SUCCEEDED; the second rolled back by StopServiceDeployment when its alarm fired."
    );
    Ok(())
}

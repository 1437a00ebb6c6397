//! `flightdeck-admin`: operator commands that work on the table directly, until the API exists.
//! Uses the standard AWS environment (region, credentials, `AWS_ENDPOINT_URL`) and
//! `FLIGHTDECK_TABLE`.
//!
//!   flightdeck-admin register SERVICE ENVIRONMENT FILE   validate and write a registration
//!   flightdeck-admin registrations                       list the registrations
//!   flightdeck-admin show DEPLOYMENT_ID                  a deployment and its audit trail
//!   flightdeck-admin approve DEPLOYMENT_ID PRINCIPAL     approve as PRINCIPAL (an IAM ARN) and start
//!                                                        it; needs FLIGHTDECK_TOPIC_ARN too

use std::process::ExitCode;

use flightdeck::adapters::{
    dynamodb::DynamoStore, ecs::EcsClient, elbv2::ElbTraffic, sns::SnsNotifier,
};
use flightdeck::config::Config;
use flightdeck::handlers::{self, Ports};
use flightdeck::ports::{DeploymentStore, SystemClock};
use flightdeck::registration::Registration;

const USAGE: &str = "usage:
  flightdeck-admin register SERVICE ENVIRONMENT FILE
  flightdeck-admin registrations
  flightdeck-admin show DEPLOYMENT_ID
  flightdeck-admin approve DEPLOYMENT_ID PRINCIPAL
environment: FLIGHTDECK_TABLE and the standard AWS settings (AWS_REGION, credentials, AWS_ENDPOINT_URL)";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flightdeck-admin: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &[String]) -> flightdeck_local::Result<()> {
    let command: Vec<&str> = args.iter().map(String::as_str).collect();
    if matches!(command.as_slice(), [] | ["-h" | "--help" | "help", ..]) {
        println!("{USAGE}");
        return Ok(());
    }
    let table = std::env::var("FLIGHTDECK_TABLE")
        .map_err(|_| "missing setting FLIGHTDECK_TABLE (the table name)")?;
    let sdk = aws_config::load_from_env().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    match command.as_slice() {
        ["register", service, environment, file] => {
            let json = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
            let registration = Registration::parse(service, environment, &json)?;
            registration.check_against(&store.registrations().await?)?;
            flightdeck::api::check_managed(
                &EcsClient::new(aws_sdk_ecs::Client::new(&sdk)),
                &ElbTraffic::new(aws_sdk_elasticloadbalancingv2::Client::new(&sdk)),
                &registration,
            )
            .await?;
            store.put_registration(&registration).await?;
            println!(
                "registered {service} in {environment}: pushes of {}:{} deploy to ECS service {} in cluster {}",
                registration.spec.repository,
                registration.spec.tag_pattern,
                registration.ecs_service(),
                registration.spec.cluster
            );
            Ok(())
        }
        ["registrations"] => {
            for r in store.registrations().await? {
                println!(
                    "{}\t{}\t{}:{}\t{}/{}",
                    r.service,
                    r.environment,
                    r.spec.repository,
                    r.spec.tag_pattern,
                    r.spec.cluster,
                    r.ecs_service()
                );
            }
            Ok(())
        }
        ["show", id] => {
            let mut d = store
                .get(id)
                .await?
                .ok_or_else(|| format!("deployment {id} not found"))?;
            let trail = store.audit_trail(id).await?;
            if !trail.is_empty() {
                d.events = trail;
            }
            println!("{}", flightdeck_local::timeline::describe(&d));
            Ok(())
        }
        ["approve", id, principal] => {
            // Approving starts the rollout, so this needs every port a function has.
            let config = Config::from_env()?;
            let ports = Ports {
                store,
                ecs: EcsClient::new(aws_sdk_ecs::Client::new(&sdk)),
                traffic: ElbTraffic::new(aws_sdk_elasticloadbalancingv2::Client::new(&sdk)),
                notifier: SnsNotifier::new(aws_sdk_sns::Client::new(&sdk), config.topic_arn),
                clock: SystemClock,
                images: flightdeck::adapters::ecr::EcrImages::new(aws_sdk_ecr::Client::new(&sdk)),
            };
            let d = handlers::approve(&ports, id, principal).await?;
            println!("approved {id} as {principal}: now {}", d.status());
            Ok(())
        }
        _ => Err(format!("unknown command `{}`\n{USAGE}", command.join(" ")).into()),
    }
}

//! One contract per port (`stores`: deliveries and endpoints), run against both adapters behind it: the memory
//! stand-in and the AWS adapter on the emulator. What one accepts or refuses,
//! the other must too, so the two cannot drift apart.

mod cursors;
mod events;
mod idempotency;
mod stores;

use webhooks_aws::adapters::{adapters, Locations};
use webhooks_aws::resources::{create_all, ResourceNames};
use webhooks_aws::AwsClients;
use webhooks_memory::MemoryBackend;
use webhooks_ports::Adapters;

/// The memory backend's adapters.
fn memory() -> Adapters {
    MemoryBackend::new().adapters()
}

/// The DynamoDB/SQS adapters over fresh, uniquely named resources on the
/// emulator.
async fn moto(test: &str) -> Adapters {
    let config = webhooks_testkit::aws::emulator_config().await;
    let clients = AwsClients::from_config(&config);
    let names = ResourceNames::new(&webhooks_testkit::aws::unique_prefix(test));
    let made = create_all(&clients, &names)
        .await
        .expect("create resources");
    adapters(&clients, &Locations::for_names(&names, &made))
}

/// Runs `$contract` against both adapters, as two tests.
macro_rules! on_both_backends {
    ($contract:path, $memory:ident, $moto:ident) => {
        #[tokio::test]
        async fn $memory() {
            $contract(crate::contract::memory()).await;
        }

        #[tokio::test]
        async fn $moto() {
            $contract(crate::contract::moto(stringify!($moto)).await).await;
        }
    };
}
pub(crate) use on_both_backends;

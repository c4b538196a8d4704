//! Black-box tests of the inventory (`jitbot::azure::inventory`) against the ARM emulator: VM
//! resolution for every NSG placement, paged lists, the permissions API.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use jitbot::azure::inventory::{Permission, allows};
use jitbot::azure::{
    Azure, AzureOverrides, AzureSettings, Backend, ResolveError, Scope, Unsupported, connect,
};
use jitbot_sim::arm::{ArmSim, ArmSimOptions, IpConfigSpec, NicSpec};

const SUB: &str = "/subscriptions/11111111-2222-3333-4444-555555555555";

fn rg(name: &str) -> String {
    format!("{SUB}/resourceGroups/{name}")
}

fn nsg(rg_name: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Network/networkSecurityGroups/{name}",
        rg(rg_name)
    )
}

fn vm(rg_name: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Compute/virtualMachines/{name}",
        rg(rg_name)
    )
}

#[derive(Debug)]
struct FixedCredential;

#[async_trait::async_trait]
impl TokenCredential for FixedCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            Secret::new("test-token"),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

/// An emulator with one virtual network (subnets `a` and `b`) in `net`, and a client.
async fn setup(list_page_size: usize) -> (ArmSim, Azure, Vec<String>) {
    jitbot::install_crypto();
    let sim = ArmSim::start(ArmSimOptions {
        list_page_size,
        ..ArmSimOptions::default()
    })
    .await
    .expect("start ARM emulator");
    let vnet = format!(
        "{}/providers/Microsoft.Network/virtualNetworks/vnet1",
        rg("net")
    );
    let subnets = sim.add_vnet(
        &vnet,
        "westeurope",
        &[("a", "10.0.1.0/24"), ("b", "10.0.2.0/24")],
    );
    let mut settings = AzureSettings::with_backend(Backend::Arm);
    settings.arm_endpoint = url::Url::parse(&sim.base_url).expect("sim URL");
    settings.request_timeout = Duration::from_secs(3);
    settings.retry_budget = Duration::from_secs(10);
    let overrides = AzureOverrides {
        credential_factory: Some(Arc::new(|| {
            let c: Arc<dyn TokenCredential> = Arc::new(FixedCredential);
            Ok(c)
        })),
        ..Default::default()
    };
    let azure = connect(&settings, overrides).await.expect("connect");
    (sim, azure, subnets)
}

fn names(path: &jitbot::azure::VmPath) -> Vec<&str> {
    path.nsgs.iter().map(|n| n.name()).collect()
}

#[tokio::test]
async fn a_vm_resolves_through_its_primary_nic_to_every_nsg_on_its_path() {
    let (sim, azure, subnets) = setup(100).await;
    let (nic_nsg, subnet_nsg) = (nsg("app", "nic-nsg"), nsg("net", "subnet-nsg"));
    sim.add_nsg(&nic_nsg, "westeurope");
    sim.add_nsg(&subnet_nsg, "westeurope");
    let nic_only = sim.add_simple_vm(
        &vm("app", "nic-only"),
        "westeurope",
        &subnets[1],
        "10.0.2.4",
    );
    sim.attach_nsg_to_nic(&nic_only, Some(&nic_nsg));
    sim.add_simple_vm(
        &vm("app", "subnet-only"),
        "westeurope",
        &subnets[0],
        "10.0.1.4",
    );
    assert!(sim.attach_nsg_to_subnet(&subnets[0], Some(&subnet_nsg)));
    let both = sim.add_simple_vm(&vm("app", "both"), "westeurope", &subnets[0], "10.0.1.5");
    sim.attach_nsg_to_nic(&both, Some(&nic_nsg));
    sim.add_simple_vm(&vm("app", "none"), "westeurope", &subnets[1], "10.0.2.5");

    let path = azure
        .inventory
        .resolve_vm(&vm("app", "nic-only"))
        .await
        .unwrap();
    assert_eq!(names(&path), ["nic-nsg"]);
    assert_eq!(path.private_ip.to_string(), "10.0.2.4");
    assert_eq!(path.nic_id, nic_only);
    assert_eq!(path.subnet_id, subnets[1]);
    let path = azure
        .inventory
        .resolve_vm(&vm("app", "subnet-only"))
        .await
        .unwrap();
    assert_eq!(names(&path), ["subnet-nsg"]);
    let path = azure
        .inventory
        .resolve_vm(&vm("app", "both"))
        .await
        .unwrap();
    assert_eq!(names(&path), ["subnet-nsg", "nic-nsg"], "subnet first");
    assert_eq!(path.vm_name, "both");
    let err = azure
        .inventory
        .resolve_vm(&vm("app", "none"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ResolveError::Unsupported {
                why: Unsupported::NoNsg,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no NSG on its path"), "{err}");
    let err = azure
        .inventory
        .resolve_vm(&vm("app", "ghost"))
        .await
        .unwrap_err();
    assert!(matches!(err, ResolveError::VmNotFound(_)), "{err:?}");

    // Three reads per VM (VM, NIC, subnet), each with its provider's api-version.
    let reqs = sim.requests();
    let vm_gets: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.contains("Microsoft.Compute"))
        .collect();
    assert!(
        vm_gets
            .iter()
            .all(|r| r.query.as_deref() == Some("api-version=2024-07-01"))
    );
    assert!(
        reqs.iter().all(|r| r.status < 500 && r.status != 400),
        "{reqs:?}"
    );
}

#[tokio::test]
async fn odd_nic_shapes_are_unsupported_with_the_reason() {
    let (sim, azure, subnets) = setup(100).await;
    let nic = format!(
        "{}/providers/Microsoft.Network/networkInterfaces/two-configs",
        rg("app")
    );
    let config = |name: &str, ip: &str| IpConfigSpec {
        name: name.into(),
        private_ip: Some(ip.into()),
        primary: None,
        subnet_id: Some(subnets[0].clone()),
    };
    sim.put_nic(NicSpec {
        id: nic.clone(),
        location: "westeurope".into(),
        nsg_id: None,
        ip_configurations: vec![config("c1", "10.0.1.8"), config("c2", "10.0.1.9")],
    });
    sim.add_vm(&vm("app", "odd"), "westeurope", &[&nic]);
    let err = azure
        .inventory
        .resolve_vm(&vm("app", "odd"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("several IP configurations and none is marked primary"),
        "{err}"
    );
}

#[tokio::test]
async fn lists_follow_next_link_per_subscription_and_resource_group() {
    let (sim, azure, subnets) = setup(2).await;
    for i in 0..5 {
        let group = if i < 3 { "app" } else { "db" };
        sim.add_simple_vm(
            &vm(group, &format!("vm{i}")),
            "westeurope",
            &subnets[0],
            &format!("10.0.1.{}", 10 + i),
        );
        sim.add_nsg(&nsg(group, &format!("nsg{i}")), "westeurope");
    }
    let sub = Scope::parse(SUB).unwrap();
    let app = Scope::parse(&rg("app")).unwrap();
    assert_eq!(azure.inventory.list_vms(&sub).await.unwrap().len(), 5);
    assert_eq!(azure.inventory.list_vms(&app).await.unwrap().len(), 3);
    let nics = azure.inventory.list_nics(&sub).await.unwrap();
    assert_eq!(nics.len(), 5);
    assert!(nics.iter().all(|n| n.ip_configurations.len() == 1));
    let nsgs = azure.inventory.list_nsgs(&app).await.unwrap();
    let mut got: Vec<&str> = nsgs.iter().map(|n| n.name.as_str()).collect();
    got.sort();
    assert_eq!(got, ["nsg0", "nsg1", "nsg2"]);
    let vnets = azure.inventory.list_vnets(&sub).await.unwrap();
    assert_eq!(vnets.len(), 1);
    assert_eq!(vnets[0].subnets.len(), 2);
    assert_eq!(vnets[0].subnets[0].address_prefixes, ["10.0.1.0/24"]);
    // 5 VMs at 2 a page: three pages.
    let pages = sim
        .requests()
        .iter()
        .filter(|r| r.path == format!("{SUB}/providers/Microsoft.Compute/virtualMachines"))
        .count();
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn an_nsg_shows_what_it_is_attached_to() {
    let (sim, azure, subnets) = setup(100).await;
    let id = nsg("net", "shared");
    sim.add_nsg(&id, "westeurope");
    let nic = sim.add_simple_vm(&vm("app", "w"), "westeurope", &subnets[1], "10.0.2.9");
    sim.attach_nsg_to_nic(&nic, Some(&id));
    sim.attach_nsg_to_subnet(&subnets[0], Some(&id));
    let got = azure
        .inventory
        .get_nsg(&jitbot::domain::NsgId::parse(&id).unwrap())
        .await
        .unwrap()
        .expect("exists");
    assert_eq!(got.nics, [nic]);
    assert_eq!(got.subnets, [subnets[0].clone()]);
}

#[tokio::test]
async fn permissions_are_the_bot_role_unless_a_scope_says_otherwise() {
    let (sim, azure, _) = setup(100).await;
    let id = nsg("app", "web");
    let write = "Microsoft.Network/networkSecurityGroups/securityRules/write";
    let perms: Vec<Permission> = azure.inventory.permissions(&id).await.unwrap();
    assert!(allows(&perms, write));
    sim.set_permissions(&rg("app"), &["Microsoft.Network/*"], &["*/delete"]);
    let perms = azure.inventory.permissions(&id).await.unwrap();
    assert!(allows(&perms, write));
    assert!(!allows(
        &perms,
        "Microsoft.Network/networkSecurityGroups/securityRules/delete"
    ));
    // Another resource group keeps the default.
    let other = azure.inventory.permissions(&nsg("db", "x")).await.unwrap();
    assert!(allows(
        &other,
        "Microsoft.Network/networkSecurityGroups/securityRules/delete"
    ));
    let req = sim
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/permissions"))
        .unwrap();
    assert_eq!(req.query.as_deref(), Some("api-version=2022-04-01"));
}

//! `probe()`: every layer is examined, in a child, without confining the caller.

use crate::common;

use moonjail_isolate::{probe, Availability, Layer};

fn own_status(key: &str) -> Option<String> {
    common::proc_field("/proc/self/status", key)
}

#[test]
fn probe_examines_every_layer_without_confining_the_caller() {
    let before = (own_status("NoNewPrivs"), own_status("Seccomp"));
    let net_before = std::fs::read_link("/proc/self/ns/net").ok();
    let capabilities = probe();
    eprint!("{capabilities}");
    assert_eq!(
        capabilities
            .layers
            .iter()
            .map(|(layer, _)| *layer)
            .collect::<Vec<_>>(),
        Layer::ALL
    );
    // The caller is unchanged.
    assert_eq!((own_status("NoNewPrivs"), own_status("Seccomp")), before);
    assert_eq!(std::fs::read_link("/proc/self/ns/net").ok(), net_before);
    // Landlock's verdict agrees with the kernel's ABI.
    let landlock = capabilities.availability(Layer::Landlock);
    match capabilities.landlock_abi {
        Some(abi) if abi > 0 => assert!(
            matches!(landlock, Some(Availability::Available { .. })),
            "{landlock:?}"
        ),
        _ => assert!(
            matches!(landlock, Some(Availability::Unavailable { reason }) if reason.contains("Landlock")),
            "{landlock:?}"
        ),
    }
    if capabilities.running_as_root {
        assert!(matches!(
            capabilities.availability(Layer::UserNamespace),
            Some(Availability::NotApplicable { .. })
        ));
    }
}

//! The environment checklist passes for every built-in profile, and fails for a profile
//! that breaks the requirements (proof that the check can fail).

use moonjail::{Item, Profile, ProfileSpec, Sandbox};

#[test]
fn every_builtin_profile_passes_its_checklist() {
    for profile in Profile::ALL {
        let sandbox = Sandbox::builder().profile(profile).build().unwrap();
        let results = sandbox.check().unwrap();
        assert!(
            results.len() > 20,
            "{profile}: only {} items",
            results.len()
        );
        let failed: Vec<_> = results.iter().filter(|r| !r.pass).collect();
        assert!(failed.is_empty(), "{profile}: {failed:#?}");
    }
}

fn broken_aos(drop: fn(&Item) -> bool) -> &'static ProfileSpec {
    let items: Vec<Item> = Profile::Aos
        .spec()
        .items
        .iter()
        .copied()
        .filter(|i| !drop(i))
        .collect();
    Box::leak(Box::new(ProfileSpec {
        name: "aos",
        summary: "aos missing something",
        items: Box::leak(items.into_boxed_slice()),
    }))
}

#[test]
fn a_broken_aos_profile_fails_the_check() {
    let spec = broken_aos(|i| {
        matches!(
            i,
            Item::Alias {
                name: "loadstring",
                ..
            }
        )
    });
    let sandbox = Sandbox::builder()
        .profile(Profile::Custom(spec))
        .build()
        .unwrap();
    let results = sandbox.check().unwrap();
    let failed: Vec<_> = results
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.name.as_str())
        .collect();
    assert!(failed.contains(&"loadstring present"), "{failed:?}");

    let spec = broken_aos(|i| matches!(i, Item::Package));
    let results = Sandbox::builder()
        .profile(Profile::Custom(spec))
        .build()
        .unwrap()
        .check()
        .unwrap();
    let failed: Vec<_> = results
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.name.as_str())
        .collect();
    assert!(failed.contains(&"require present"), "{failed:?}");
    assert!(failed.contains(&"package library present"), "{failed:?}");
}

#[test]
fn a_profile_exposing_a_dangerous_name_fails() {
    // minimal's list judged against a profile that also leaks rawget.
    let mut items: Vec<Item> = Profile::Minimal.spec().items.to_vec();
    items.push(Item::Global("rawget"));
    let spec: &'static ProfileSpec = Box::leak(Box::new(ProfileSpec {
        name: "minimal-plus",
        summary: "test",
        items: Box::leak(items.into_boxed_slice()),
    }));
    let sandbox = Sandbox::builder()
        .profile(Profile::Custom(spec))
        .build()
        .unwrap();
    let results = sandbox
        .check_with(moonjail::checklist(Profile::Minimal.spec()))
        .unwrap();
    let failed: Vec<_> = results
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(failed, ["rawget absent"]);
}

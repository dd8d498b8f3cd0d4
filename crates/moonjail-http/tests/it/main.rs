//! The HTTP service, started in process on 127.0.0.1:0 and driven over real HTTP: every
//! route, every refusal status, authentication and session ownership, both isolation
//! modes, the OpenAPI document against the responses, and slow clients over raw TCP. No
//! test asserts a duration.

/// The two tests of `fn $check(isolated: bool)`, one per isolation mode:
/// `$check::in_process` and `$check::isolated` (a module beside the function of the same
/// name: they live in different namespaces).
macro_rules! in_both_modes {
    ($($check:ident),+ $(,)?) => {
        $(
            mod $check {
                #[test]
                fn in_process() {
                    super::$check(false);
                }

                #[test]
                fn isolated() {
                    super::$check(true);
                }
            }
        )+
    };
}

mod auth;
mod isolated;
mod openapi;
mod refusals;
mod run;
mod service;
mod sessions;
mod slow_clients;
mod support;
mod suspend;

//! The HTTP service, started in process on 127.0.0.1:0 and driven over real HTTP: every
//! route, every refusal status, authentication and session ownership, both isolation
//! modes, the OpenAPI document against the responses, and slow clients over raw TCP. No
//! test asserts a duration.

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

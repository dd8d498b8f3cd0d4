//! The routes: thin handlers over the library. Each takes the caller (authenticated,
//! within its key's limits) and a typed body, asks the state for a sandbox or a session,
//! waits for an executor, and answers the outcome document (`Outcome`'s own
//! serialisation: the same document as `moonjail run --json`).

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use moonjail::{Outcome, Run, RunOptions, ToolError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Caller, JsonBody};
use crate::log::Logged;
use crate::sessions::{rfc3339, Command, Job};
use crate::state::AppState;
use crate::suspended::{annotate, give_up, Claim, Registered};

/// A size (`"16MiB"`, or a number of bytes) or a duration (`"500ms"`, `"2s"`, or a
/// number of seconds), in the units of the CLI's flags; `"none"` for no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity(String);

impl Quantity {
    pub(crate) fn text(&self) -> &str {
        &self.0
    }

    pub(crate) fn is_none(&self) -> bool {
        self.0 == "none"
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string with a unit (\"16MiB\", \"500ms\", \"none\") or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl utoipa::PartialSchema for Quantity {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::String, Type::Integer]))
            // A number is a count of bytes or seconds; zero is no limit anyone can run
            // under (use "none" to lift one).
            .minimum(Some(1))
            .description(Some(
                "A size (\"16MiB\", or bytes) or a duration (\"500ms\", \"2s\", or seconds), \
                 as the CLI's flags take them; \"none\" for no limit",
            ))
            .into()
    }
}

impl ToSchema for Quantity {}

/// The built-in profiles a request may name (the server may allow fewer: naming one it
/// does not allow is a 400). Documentation only: requests carry the name as a string.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum ProfileName {
    Minimal,
    Standard,
    Aos,
}

/// Limits a request asks for: each at most the server's own (asking for more is a 400
/// naming the field and the maximum). Absent fields keep the server's limit.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    /// The wall-clock deadline, e.g. `"500ms"`.
    pub timeout: Option<Quantity>,
    /// The Lua heap limit, e.g. `"16MiB"`.
    pub memory: Option<Quantity>,
    /// The instruction budget.
    #[schema(minimum = 1)]
    pub instructions: Option<u64>,
    /// The limit on captured output, e.g. `"64KiB"`.
    pub output: Option<Quantity>,
    /// The limit on the source's size.
    pub source: Option<Quantity>,
    /// The limit on the result's JSON size.
    pub result: Option<Quantity>,
    /// How deeply the input and the result may nest.
    #[schema(minimum = 1)]
    pub result_depth: Option<usize>,
}

impl LimitsRequest {
    pub(crate) fn is_empty(&self) -> bool {
        self.timeout.is_none()
            && self.memory.is_none()
            && self.instructions.is_none()
            && self.output.is_none()
            && self.source.is_none()
            && self.result.is_none()
            && self.result_depth.is_none()
    }
}

/// `POST /v1/run`: one script in a fresh sandbox.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The Lua source. If it defines a global `run`, that is called with the input.
    pub code: String,
    /// The input: the chunk's first vararg (`local input = ...`) and `run`'s argument.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub input: Value,
    /// The profile (`minimal`, `standard`, `aos`); by default the server's.
    #[schema(value_type = Option<ProfileName>)]
    pub profile: Option<String>,
    /// Lower limits for this run.
    #[serde(default)]
    pub limits: LimitsRequest,
    /// The code may be an expression (`1 + 1`): tried as `return CODE` first.
    #[serde(default)]
    pub expression: bool,
}

/// `POST /v1/runs/{id}/resume`: the answer to a suspended run's pending call. Exactly
/// one of `answer` and `error`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(max_properties = 1)]
pub struct ResumeRequest {
    /// The deferred tool's return value, as the script receives it (any JSON, `null`
    /// included).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub answer: Option<Value>,
    /// The deferred tool's error instead: the script's call fails with this message
    /// (a `pcall` around it catches it).
    #[schema(nullable = false)]
    pub error: Option<String>,
}

/// A field that is present, `null` included (`{"answer": null}` is an answer).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl ResumeRequest {
    /// The answer for `Suspension::resume`, or a 400 naming the field.
    fn into_answer(self) -> Result<Result<Value, ToolError>, ApiError> {
        match (self.answer, self.error) {
            (Some(answer), None) => Ok(Ok(answer)),
            (None, Some(error)) => Ok(Err(ToolError::new(error))),
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "error: give either `answer` (the tool's result) or `error` (its error \
                 message), not both",
            )),
            (None, None) => Err(ApiError::bad_request(
                "answer: missing; give `answer` (the tool's result, any JSON) or `error` (its \
                 error message)",
            )),
        }
    }
}

/// `POST /v1/lint`: check a script against the sandbox a run would get, without running
/// it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LintRequest {
    /// The Lua source.
    pub code: String,
    /// The profile to check against (`minimal`, `standard`, `aos`); by default the
    /// server's.
    #[schema(value_type = Option<ProfileName>)]
    pub profile: Option<String>,
}

/// `POST /v1/sessions`: a persistent state (every field optional; the body may be empty).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenSessionRequest {
    /// The profile (`minimal`, `standard`, `aos`); by default the server's.
    #[schema(value_type = Option<ProfileName>)]
    pub profile: Option<String>,
    /// Lower limits for the session (time and instructions per call, memory for the
    /// whole state).
    #[serde(default)]
    pub limits: LimitsRequest,
}

/// A session just opened.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionCreated {
    /// The session's id, for the `/v1/sessions/{id}/...` routes.
    pub id: String,
    /// When the session closes if it is not used (RFC 3339, UTC); each request moves
    /// it on by the idle timeout.
    pub expires_at: String,
    /// The idle timeout, in milliseconds.
    pub idle_timeout_ms: u64,
}

/// `POST /v1/sessions/{id}/exec`: run code in the session's state.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The Lua code; its return values are the results.
    pub code: String,
    /// The chunk's vararg (`local input = ...`).
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub input: Value,
    /// A shorter deadline for this call.
    pub timeout: Option<Quantity>,
    /// A smaller instruction budget for this call.
    #[schema(minimum = 1)]
    pub instructions: Option<u64>,
}

/// `POST /v1/sessions/{id}/eval`: the value of an expression in the session's state.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalRequest {
    /// The expression (`state.count`), tried as `return CODE`, then as a statement.
    pub code: String,
    /// A shorter deadline for this call.
    pub timeout: Option<Quantity>,
    /// A smaller instruction budget for this call.
    #[schema(minimum = 1)]
    pub instructions: Option<u64>,
}

/// `POST /v1/sessions/{id}/call`: call a function of the session's state.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// The function's name, possibly dotted (`utils.map`).
    pub function: String,
    /// The arguments, each converted from JSON (absent or null: none).
    #[serde(default)]
    #[schema(value_type = Option<Vec<serde_json::Value>>)]
    pub args: Option<Vec<Value>>,
    /// A shorter deadline for this call.
    pub timeout: Option<Quantity>,
    /// A smaller instruction budget for this call.
    #[schema(minimum = 1)]
    pub instructions: Option<u64>,
}

/// `POST /v1/sessions/{id}/has_function`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HasFunctionRequest {
    /// The name, possibly dotted.
    pub name: String,
}

/// Whether a session has a function.
#[derive(Debug, Serialize, ToSchema)]
pub struct HasFunctionAnswer {
    /// The name asked about.
    pub name: String,
    /// True when it names a function or a callable table.
    pub exists: bool,
}

/// `GET /healthz`, `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (`/healthz`), `ready` or `not ready` (`/readyz`: starting, or stopping).
    pub status: String,
}

/// An outcome as a response: the document, `Content-Type: application/json`.
pub(crate) struct OutcomeResponse {
    body: String,
    kind: &'static str,
}

impl OutcomeResponse {
    fn new(outcome: &Outcome) -> Self {
        OutcomeResponse {
            body: moonjail::to_json_line(outcome),
            kind: outcome.error().map_or("ok", |e| e.kind.as_str()),
        }
    }
}

impl IntoResponse for OutcomeResponse {
    fn into_response(self) -> Response {
        let mut response =
            ([(header::CONTENT_TYPE, "application/json")], self.body).into_response();
        response.extensions_mut().insert(Logged::kind(self.kind));
        response
    }
}

/// The OpenAPI document's frame; the paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "moonjail",
        description = "Run untrusted Lua 5.4 in a sandbox: one-off runs and persistent \
                       sessions, under exact limits. Every run answers the outcome document \
                       of `moonjail run --json`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "runs", description = "One script, one fresh sandbox; a run suspended at a \
                                        deferred tool call waits for its answer"),
        (name = "sessions", description = "A persistent state, owned by the key that opened it"),
        (name = "service", description = "Health, readiness, metrics, this document")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `ResumeRequest` has exactly one property: the derive sets its maximum, not its
/// minimum. Applied to the whole document, once the routes have brought their schemas.
struct ExactlyOne;

impl utoipa::Modify for ExactlyOne {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::Schema;
        use utoipa::openapi::RefOr;
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut("ResumeRequest")
        {
            object.min_properties = Some(1);
        }
    }
}

/// Every route, with its OpenAPI description.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(run))
        .routes(routes!(resume_run))
        .routes(routes!(give_up_run))
        .routes(routes!(lint))
        .routes(routes!(open_session))
        .routes(routes!(close_session))
        .routes(routes!(session_exec))
        .routes(routes!(session_eval))
        .routes(routes!(session_call))
        .routes(routes!(session_has_function))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// The OpenAPI document of [`routes`], as JSON.
pub(crate) fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut document = routes().split_for_parts().1;
    // After the routes: they bring the schemas.
    utoipa::Modify::modify(&ExactlyOne, &mut document);
    document
}

fn joined<T>(result: Result<T, tokio::task::JoinError>) -> Result<T, ApiError> {
    result.map_err(|e| ApiError::internal(format!("a run's thread failed: {e}")))
}

/// Runs a script once, in a fresh sandbox.
///
/// The answer is the outcome document whether the script succeeded or not: a script's
/// failure (`ok: false`, `error.kind`) is a 200. Other statuses are refusals, with an
/// `{"error": {"kind", "message"}}` body.
///
/// On a server with deferred tools (`moonjail serve --defer-tool NAME`), a script that
/// calls one stops there: the outcome has error kind `suspended`, and its `error.value`
/// is the pending call `{"name", "args"}` with `"run"`, the suspended run's id for
/// `POST /v1/runs/{id}/resume` and `DELETE /v1/runs/{id}`, and `"expires_at"` (RFC
/// 3339), when it is given up unanswered. Past the caps of suspended runs, the run is
/// given up at once (it ends as suspended) and the answer is a 429 (the key's cap) or a
/// 503 (the service's), kind `too_many_suspended`.
#[utoipa::path(
    post, path = "/v1/run", tag = "runs",
    request_body = RunRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The outcome document (error kind `suspended` at a deferred tool call, with `run` and `expires_at` in `error.value`)", body = moonjail::OutcomeDoc),
        (status = 400, description = "Malformed body, unknown profile, or a limit over the server's", body = ErrorBody),
        (status = 401, description = "No key, or not a valid one", body = ErrorBody),
        (status = 403, description = "The profile asked for is one this server does not allow (`--profiles`)", body = ErrorBody),
        (status = 408, description = "The request took longer than the request timeout", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 429, description = "The key's rate or concurrency limit, or its cap of suspended runs", body = ErrorBody),
        (status = 503, description = "Every executor is busy and the queue is full, or the service's cap of suspended runs", body = ErrorBody),
    )
)]
async fn run(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<RunRequest>,
) -> Result<OutcomeResponse, ApiError> {
    let sandbox = state.sandbox_for(request.profile.as_deref(), &request.limits)?;
    let profile = sandbox.profile().name();
    let place = state.executors.place()?;
    let (answer, answered) = oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let defers = state.defers;
    let suspended = state.suspended.clone();
    let owner = caller.key.clone();
    // On a runner thread: it waits for an executor there, so the thread that finishes a
    // run goes straight on to the next queued one.
    state.runners.submit(Box::new(move || {
        let mut answer = answer;
        // Not run at all if the request went away meanwhile (timeout, client gone,
        // shutdown): its receiver is dropped.
        let Some(ticket) = place.wait_blocking(&runtime, answer.closed()) else {
            return;
        };
        let options = RunOptions::default().expression(request.expression);
        if !defers {
            let outcome = sandbox.run_with(request.code.as_bytes(), &request.input, &options);
            drop(ticket);
            // Written here, off the async threads: a deep result takes stack.
            let response = OutcomeResponse::new(&outcome);
            let _ = answer.send(Ok((outcome, response)));
            return;
        }
        let run = sandbox.start(request.code.as_bytes(), &request.input, &options);
        // A suspended run waits without an executor.
        drop(ticket);
        let settled = match run {
            Run::Finished(outcome) => Ok((outcome, None)),
            Run::Suspended(suspension) => {
                let outcome = suspension.outcome();
                match suspended.insert(&owner, profile, Box::new(suspension)) {
                    Ok(registered) => Ok((outcome, Some(registered))),
                    Err((refusal, suspension)) => {
                        drop(suspension);
                        Err(refusal)
                    }
                }
            }
        };
        send_settled(&suspended, answer, settled);
    }));
    let (outcome, response) = answered
        .await
        .map_err(|_| ApiError::internal("a run's thread failed"))??;
    state.metrics.outcome("run", profile, &outcome);
    Ok(response)
}

/// What a run or a resume answers.
type Settled = Result<(Outcome, OutcomeResponse), ApiError>;

/// Sends a started or resumed run's outcome (with the id and expiry of its suspension,
/// if it suspended) to the request; a suspension whose request went away is given up, as
/// nobody could know its id.
fn send_settled(
    suspended: &crate::suspended::SuspendedRuns,
    answer: oneshot::Sender<Settled>,
    settled: Result<(Outcome, Option<Registered>), ApiError>,
) {
    let (mut outcome, registered) = match settled {
        Ok(settled) => settled,
        Err(refusal) => {
            let _ = answer.send(Err(refusal));
            return;
        }
    };
    if let Some(registered) = &registered {
        annotate(&mut outcome, registered);
    }
    // Written here, off the async threads: a deep result takes stack.
    let response = OutcomeResponse::new(&outcome);
    if answer.send(Ok((outcome, response))).is_err() {
        if let Some(registered) = registered {
            drop(suspended.forget(&registered.id));
        }
    }
}

/// Resumes a suspended run: the answer (or error) goes to the script as its deferred
/// tool call's result, and the run goes on to its end or its next deferred call.
///
/// The answer is the outcome document, as `POST /v1/run`'s: the run's end, or, at its
/// next deferred call, error kind `suspended` again, with a new id in `error.value.run`
/// (each id answers one pending call: a second resume of the same id is a 404). A run
/// resumed by another key, unknown, expired, given up, or already resumed is a 404.
/// Resuming waits for an executor as a run does.
#[utoipa::path(
    post, path = "/v1/runs/{id}/resume", tag = "runs",
    params(("id" = String, Path, description = "The suspended run's id (`error.value.run` of its outcome)")),
    request_body = ResumeRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The outcome document (error kind `suspended` again at the next deferred call, with a new `run` id)", body = moonjail::OutcomeDoc),
        (status = 400, description = "Malformed body: not exactly one of `answer` and `error`", body = ErrorBody),
        (status = 401, description = "No key, or not a valid one", body = ErrorBody),
        (status = 404, description = "No such suspended run for this key (unknown, expired, given up or already resumed)", body = ErrorBody),
        (status = 408, description = "The request took longer than the request timeout", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 429, description = "The key's rate or concurrency limit", body = ErrorBody),
        (status = 503, description = "Every executor is busy and the queue is full, or the service is stopping", body = ErrorBody),
    )
)]
async fn resume_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<ResumeRequest>,
) -> Result<OutcomeResponse, ApiError> {
    let reply = request.into_answer()?;
    let place = state.executors.place()?;
    let claim = state.suspended.claim(&caller.key, &id)?;
    let profile = claim.profile();
    let (answer, answered) = oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let suspended = state.suspended.clone();
    state.runners.submit(Box::new(move || {
        let mut answer = answer;
        let mut claim: Claim = claim;
        // The request went away while waiting: the claim, dropped, puts the run back.
        let Some(ticket) = place.wait_blocking(&runtime, answer.closed()) else {
            return;
        };
        let Some(suspension) = claim.take() else {
            let _ = answer.send(Err(ApiError::internal("the suspended run was taken twice")));
            return;
        };
        let run = (*suspension).resume(reply);
        drop(ticket);
        let settled = match run {
            Run::Finished(outcome) => {
                claim.finish();
                Ok((outcome, None))
            }
            Run::Suspended(suspension) => {
                let outcome = suspension.outcome();
                match claim.suspend_again(Box::new(suspension)) {
                    Ok(registered) => Ok((outcome, Some(registered))),
                    Err((refusal, suspension)) => {
                        drop(suspension);
                        Err(refusal)
                    }
                }
            }
        };
        send_settled(&suspended, answer, settled);
    }));
    let (outcome, response) = answered
        .await
        .map_err(|_| ApiError::internal("a resumed run's thread failed"))??;
    state.metrics.resumed();
    state.metrics.outcome("resume", profile, &outcome);
    Ok(response)
}

/// Gives up a suspended run: it ends as suspended, and its id is forgotten.
#[utoipa::path(
    delete, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The suspended run's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Given up"),
        (status = 401, description = "No key, or not a valid one", body = ErrorBody),
        (status = 404, description = "No such suspended run for this key (unknown, expired, given up, or resumed)", body = ErrorBody),
        (status = 429, description = "The key's rate or concurrency limit", body = ErrorBody),
    )
)]
async fn give_up_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let suspension = state.suspended.remove(&caller.key, &id)?;
    give_up(vec![suspension]);
    Ok(StatusCode::NO_CONTENT)
}

/// Checks a script against the sandbox a run would get, without running it: syntax
/// errors with hints, globals and members the profile does not have, tools, literal
/// URLs the allowlist refuses, the usual correctness lints; and a manifest of what the
/// script reaches. Feedback before a run; the run's own checks stay the boundary.
#[utoipa::path(
    post, path = "/v1/lint", tag = "runs",
    request_body = LintRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The findings and the manifest", body = moonjail::LintReport),
        (status = 400, description = "Malformed body, or an unknown profile", body = ErrorBody),
        (status = 401, description = "No key, or not a valid one", body = ErrorBody),
        (status = 403, description = "The profile asked for is one this server does not allow (`--profiles`)", body = ErrorBody),
        (status = 408, description = "The request took longer than the request timeout", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 429, description = "The key's rate or concurrency limit", body = ErrorBody),
        (status = 503, description = "Every executor is busy and the queue is full", body = ErrorBody),
    )
)]
async fn lint(
    State(state): State<AppState>,
    _caller: Caller,
    JsonBody(request): JsonBody<LintRequest>,
) -> Result<Json<moonjail::LintReport>, ApiError> {
    let sandbox = state.sandbox_for(request.profile.as_deref(), &LimitsRequest::default())?;
    let ticket = state.executors.admit().await?;
    // Parsing is CPU work proportional to the source: on an executor, like a run.
    let report = joined(
        tokio::task::spawn_blocking(move || {
            let report = sandbox.lint(request.code.as_bytes());
            drop(ticket);
            report
        })
        .await,
    )?;
    Ok(Json(report))
}

/// Opens a persistent session.
#[utoipa::path(
    post, path = "/v1/sessions", tag = "sessions",
    request_body(content = Option<OpenSessionRequest>, description = "Optional: a profile and lower limits"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The session is open", body = SessionCreated),
        (status = 400, description = "Malformed body, or the state could not be built", body = ErrorBody),
        (status = 401, description = "No key, or not a valid one", body = ErrorBody),
        (status = 403, description = "The profile asked for is one this server does not allow (`--profiles`)", body = ErrorBody),
        (status = 408, description = "The request took longer than the request timeout", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 429, description = "The key's limits, or its session cap", body = ErrorBody),
        (status = 503, description = "Overloaded, or the service's session cap", body = ErrorBody),
    )
)]
async fn open_session(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<OpenSessionRequest>,
) -> Result<(StatusCode, Json<SessionCreated>), ApiError> {
    let sandbox = state.sandbox_for(request.profile.as_deref(), &request.limits)?;
    let ticket = state.executors.admit().await?;
    let opened = state.sessions.open(caller.key.clone(), sandbox).await?;
    drop(ticket);
    let opened = opened.map_err(|e| match e.kind {
        // No worker could be started, or it died: the service's trouble, not the request's.
        moonjail::ErrorKind::Internal | moonjail::ErrorKind::Killed => ApiError::unavailable(
            "unavailable",
            format!("opening the session: {e}"),
            std::time::Duration::from_secs(1),
        ),
        _ => ApiError::bad_request(format!("opening the session: {e}")),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(SessionCreated {
            id: opened.id,
            expires_at: rfc3339(opened.expires_at),
            idle_timeout_ms: u64::try_from(state.sessions.idle().as_millis()).unwrap_or(u64::MAX),
        }),
    ))
}

/// Closes a session (its state is dropped; isolated, its worker is killed).
#[utoipa::path(
    delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Closed"),
        (status = 401, description = "No key, or not a valid one", body = ErrorBody),
        (status = 404, description = "No such session for this key", body = ErrorBody),
        (status = 429, description = "The key's rate or concurrency limit", body = ErrorBody),
    )
)]
async fn close_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.sessions.remove(&caller.key, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends `command` to session `id` of `caller` on an executor, and waits for its answer.
async fn on_session<T>(
    state: &AppState,
    caller: &Caller,
    id: &str,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<(T, &'static str), ApiError> {
    let session = state.sessions.get(&caller.key, id)?;
    let ticket = state.executors.admit().await?;
    let (reply, answer) = oneshot::channel();
    session.send(Job {
        command: command(reply),
        ticket,
    })?;
    let answer = answer
        .await
        .map_err(|_| ApiError::internal("the session's thread ended without answering"))?;
    Ok((answer, session.profile()))
}

/// A session request that runs code: its outcome, counted in the metrics.
async fn session_outcome(
    state: &AppState,
    caller: &Caller,
    id: &str,
    command: impl FnOnce(oneshot::Sender<moonjail::Outcome>) -> Command,
) -> Result<OutcomeResponse, ApiError> {
    let (outcome, profile) = on_session(state, caller, id, command).await?;
    state.metrics.outcome("session", profile, &outcome);
    Ok(OutcomeResponse::new(&outcome))
}

/// Runs code in a session's state; the results are the chunk's return values.
#[utoipa::path(
    post, path = "/v1/sessions/{id}/exec", tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    request_body = ExecRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The outcome document", body = moonjail::OutcomeDoc),
        (status = 400, description = "Malformed body, or a limit over the server's", body = ErrorBody),
        (status = 401, description = "No key, or not a valid one", body = ErrorBody),
        (status = 404, description = "No such session for this key", body = ErrorBody),
        (status = 408, description = "The request took longer than the request timeout", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 429, description = "The key's rate or concurrency limit", body = ErrorBody),
        (status = 503, description = "Every executor is busy and the queue is full", body = ErrorBody),
    )
)]
async fn session_exec(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<ExecRequest>,
) -> Result<OutcomeResponse, ApiError> {
    let options = state.call_options(request.timeout.as_ref(), request.instructions)?;
    session_outcome(&state, &caller, &id, |reply| Command::Exec {
        code: request.code,
        input: request.input,
        expression: false,
        options,
        reply,
    })
    .await
}

/// The value of an expression in a session's state.
#[utoipa::path(
    post, path = "/v1/sessions/{id}/eval", tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    request_body = EvalRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The outcome document", body = moonjail::OutcomeDoc),
        (status = 400, description = "Malformed body, or a limit over the server's", body = ErrorBody),
        (status = 401, description = "No key, or not a valid one", body = ErrorBody),
        (status = 404, description = "No such session for this key", body = ErrorBody),
        (status = 408, description = "The request took longer than the request timeout", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 429, description = "The key's rate or concurrency limit", body = ErrorBody),
        (status = 503, description = "Every executor is busy and the queue is full", body = ErrorBody),
    )
)]
async fn session_eval(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<EvalRequest>,
) -> Result<OutcomeResponse, ApiError> {
    let options = state.call_options(request.timeout.as_ref(), request.instructions)?;
    session_outcome(&state, &caller, &id, |reply| Command::Exec {
        code: request.code,
        input: Value::Null,
        expression: true,
        options,
        reply,
    })
    .await
}

/// Calls a function of a session's state with JSON arguments.
#[utoipa::path(
    post, path = "/v1/sessions/{id}/call", tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    request_body = CallRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The outcome document", body = moonjail::OutcomeDoc),
        (status = 400, description = "Malformed body, or a limit over the server's", body = ErrorBody),
        (status = 401, description = "No key, or not a valid one", body = ErrorBody),
        (status = 404, description = "No such session for this key", body = ErrorBody),
        (status = 408, description = "The request took longer than the request timeout", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 429, description = "The key's rate or concurrency limit", body = ErrorBody),
        (status = 503, description = "Every executor is busy and the queue is full", body = ErrorBody),
    )
)]
async fn session_call(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<CallRequest>,
) -> Result<OutcomeResponse, ApiError> {
    let options = state.call_options(request.timeout.as_ref(), request.instructions)?;
    session_outcome(&state, &caller, &id, |reply| Command::Call {
        function: request.function,
        args: request.args.unwrap_or_default(),
        options,
        reply,
    })
    .await
}

/// Whether a session has a function (or a callable table) of that name.
#[utoipa::path(
    post, path = "/v1/sessions/{id}/has_function", tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    request_body = HasFunctionRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The answer", body = HasFunctionAnswer),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No key, or not a valid one", body = ErrorBody),
        (status = 404, description = "No such session for this key", body = ErrorBody),
        (status = 409, description = "The session closed itself (after a timeout, say)", body = ErrorBody),
        (status = 408, description = "The request took longer than the request timeout", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 429, description = "The key's rate or concurrency limit", body = ErrorBody),
        (status = 503, description = "Every executor is busy and the queue is full", body = ErrorBody),
    )
)]
async fn session_has_function(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<HasFunctionRequest>,
) -> Result<Json<HasFunctionAnswer>, ApiError> {
    let name = request.name.clone();
    let (answer, _) = on_session(&state, &caller, &id, |reply| Command::HasFunction {
        name: request.name,
        reply,
    })
    .await?;
    let exists = answer.map_err(|e| ApiError::session_closed(e.message))?;
    Ok(Json(HasFunctionAnswer { name, exists }))
}

/// Liveness: the process answers.
#[utoipa::path(
    get, path = "/healthz", tag = "service",
    responses((status = 200, description = "Alive", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: a warm-up script has run (isolated: a worker is up and answering), and the
/// service is not stopping.
#[utoipa::path(
    get, path = "/readyz", tag = "service",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Starting or stopping", body = Health),
    )
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    if state.is_ready() {
        (
            StatusCode::OK,
            Json(Health {
                status: "ready".into(),
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "not ready".into(),
            }),
        )
    }
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(
    get, path = "/metrics", tag = "service",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String))
)]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state
        .metrics_text()
        .map_err(|e| ApiError::internal(format!("encoding metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// This document: every route the service serves, with its request and response schemas
/// (the outcome's derived from the library's own document type).
#[utoipa::path(
    get, path = "/openapi.json", tag = "service",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
async fn openapi_json() -> Response {
    static DOCUMENT: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    match DOCUMENT.get_or_init(|| openapi_document().to_json().map_err(|e| e.to_string())) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text.clone()).into_response(),
        Err(e) => ApiError::internal(format!("encoding the OpenAPI document: {e}")).into_response(),
    }
}

/// What a request for no route gets.
pub(crate) async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}; see /openapi.json", uri.path()))
}

/// What a request with a method the route does not serve gets.
pub(crate) async fn no_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{} does not serve {method}; see /openapi.json",
        uri.path()
    ))
}

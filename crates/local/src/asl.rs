//! A small Amazon States Language interpreter: runs the JSONPath subset of ASL that
//! statemachine/image_pipeline.asl.json uses, calling Task resources through a pluggable executor.
//!
//! Parsing is strict (unknown state types, fields, choice operators or dangling transitions are
//! errors) so that "the definition loads" means "the runner executes every part of it".
//! Where the ASL spec and AWS Step Functions differ, this follows Step Functions, since that is
//! where the same file runs in the cloud: a path that selects nothing is `States.Runtime`, which
//! no Retry or Catch handles, not even `States.ALL`.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};
use tracing::debug;

mod choice;
use choice::Rule;

const ALL: &str = "States.ALL";
const TASK_FAILED: &str = "States.TaskFailed";
const TIMEOUT: &str = "States.Timeout";
const RUNTIME: &str = "States.Runtime";
const RESULT_PATH_MATCH_FAILURE: &str = "States.ResultPathMatchFailure";
const NO_CHOICE_MATCHED: &str = "States.NoChoiceMatched";

/// Errors that are not part of an execution's own outcome: the definition is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AslError {
    #[error("invalid state machine definition: {0}")]
    Definition(String),
    #[error("execution {execution} exceeded {limit} state transitions")]
    TransitionLimit { execution: String, limit: usize },
}

/// A failed task, as Lambda reports it: an error name (errorType) and a cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {cause}")]
pub struct TaskFailure {
    pub error: String,
    pub cause: String,
}

impl TaskFailure {
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> TaskFailure {
        TaskFailure {
            error: error.into(),
            cause: cause.into(),
        }
    }
}

fn runtime(cause: String) -> TaskFailure {
    TaskFailure::new(RUNTIME, cause)
}

/// Runs a Task state's `Resource`.
#[async_trait]
pub trait TaskExecutor: Send + Sync {
    async fn invoke(&self, resource: &str, input: Value) -> Result<Value, TaskFailure>;
}

// ---------------------------------------------------------------------------------------------
// Paths and templates

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A reference path: `$` or `$$` then `.name`, `['name']` or `[n]` steps; no wildcards/filters.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct Path {
    context: bool,
    segs: Vec<Seg>,
    text: String,
}

impl TryFrom<String> for Path {
    type Error = String;

    fn try_from(text: String) -> Result<Path, String> {
        let bad = |why: &str| format!("path {text:?}: {why}");
        let (context, mut rest) = match text.strip_prefix("$$") {
            Some(r) => (true, r),
            None => match text.strip_prefix('$') {
                Some(r) => (false, r),
                None => return Err(bad("only JSONPath references are supported, no intrinsics")),
            },
        };
        let mut segs = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                let key = &r[..end];
                if key.is_empty() || key.contains(['*', ' ', '?', '@']) {
                    return Err(bad("unsupported step"));
                }
                segs.push(Seg::Key(key.to_string()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').ok_or_else(|| bad("unclosed ["))?;
                let inner = &r[..end];
                let seg = match inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                    Some(key) => Seg::Key(key.to_string()),
                    None => Seg::Index(inner.parse().map_err(|_| bad("unsupported index"))?),
                };
                segs.push(seg);
                rest = &r[end + 1..];
            } else {
                return Err(bad("expected . or ["));
            }
        }
        Ok(Path {
            context,
            segs,
            text,
        })
    }
}

impl Path {
    fn get<'v>(&self, input: &'v Value, ctx: &'v Value) -> Option<&'v Value> {
        let root = if self.context { ctx } else { input };
        self.segs.iter().try_fold(root, |v, s| match s {
            Seg::Key(k) => v.get(k.as_str()),
            Seg::Index(i) => v.get(*i),
        })
    }

    fn resolve(&self, input: &Value, ctx: &Value) -> Result<Value, TaskFailure> {
        self.get(input, ctx)
            .cloned()
            .ok_or_else(|| self.missing(input, ctx))
    }

    fn missing(&self, input: &Value, ctx: &Value) -> TaskFailure {
        let against = if self.context { ctx } else { input };
        runtime(format!(
            "the JSONPath '{}' could not be found in the input '{against}'",
            self.text
        ))
    }
}

/// A ResultPath: a path of object fields from `$`, created as needed when the result is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct ResultPath(Vec<String>);

impl TryFrom<String> for ResultPath {
    type Error = String;

    fn try_from(text: String) -> Result<ResultPath, String> {
        let path = Path::try_from(text)?;
        if path.context {
            return Err(format!("ResultPath {:?} cannot address $$", path.text));
        }
        let keys = path.segs.into_iter().map(|s| match s {
            Seg::Key(k) => Ok(k),
            Seg::Index(_) => Err(format!(
                "ResultPath {:?}: only fields, not indexes",
                path.text
            )),
        });
        keys.collect::<Result<_, _>>().map(ResultPath)
    }
}

/// `Parameters`, `ItemSelector` or `ResultSelector`: fields named `x.$` take a path's value.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "Value")]
enum Template {
    Literal(Value),
    Path(Path),
    Object(Vec<(String, Template)>),
    Array(Vec<Template>),
}

impl TryFrom<Value> for Template {
    type Error = String;

    fn try_from(v: Value) -> Result<Template, String> {
        Ok(match v {
            Value::Object(m) => Template::Object(
                m.into_iter()
                    .map(|(k, v)| match (k.strip_suffix(".$"), v) {
                        (Some(name), Value::String(p)) => {
                            Ok((name.to_string(), Template::Path(Path::try_from(p)?)))
                        }
                        (Some(_), other) => Err(format!("field {k:?} needs a path, not {other}")),
                        (None, v) => Ok((k, Template::try_from(v)?)),
                    })
                    .collect::<Result<_, String>>()?,
            ),
            Value::Array(a) => Template::Array(
                a.into_iter()
                    .map(Template::try_from)
                    .collect::<Result<_, _>>()?,
            ),
            v => Template::Literal(v),
        })
    }
}

impl Template {
    fn render(&self, input: &Value, ctx: &Value) -> Result<Value, TaskFailure> {
        Ok(match self {
            Template::Literal(v) => v.clone(),
            Template::Path(p) => p.resolve(input, ctx)?,
            Template::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), t.render(input, ctx)?)))
                    .collect::<Result<Map<_, _>, TaskFailure>>()?,
            ),
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.render(input, ctx))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

/// Absent (`None`) and JSON null (`Some(None)`) mean different things for paths.
type Nullable<T> = Option<Option<T>>;

fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// InputPath/OutputPath: absent keeps the value, null gives `{}`.
fn select(path: &Nullable<Path>, v: &Value, ctx: &Value) -> Result<Value, TaskFailure> {
    match path {
        None => Ok(v.clone()),
        Some(None) => Ok(json!({})),
        Some(Some(p)) => p.resolve(v, ctx),
    }
}

/// ResultPath: absent replaces the input with the result, null discards the result.
fn place(path: &Nullable<ResultPath>, raw: Value, result: Value) -> Result<Value, TaskFailure> {
    let keys = match path {
        None => return Ok(result),
        Some(None) => return Ok(raw),
        Some(Some(ResultPath(keys))) => keys,
    };
    let Some((last, parents)) = keys.split_last() else {
        return Ok(result);
    };
    let mismatch = || {
        TaskFailure::new(
            RESULT_PATH_MATCH_FAILURE,
            format!("cannot set $.{} on the state input", keys.join(".")),
        )
    };
    let mut root = raw;
    let mut node = &mut root;
    for k in parents {
        let Value::Object(m) = node else {
            return Err(mismatch());
        };
        node = m.entry(k.clone()).or_insert_with(|| json!({}));
    }
    let Value::Object(m) = node else {
        return Err(mismatch());
    };
    m.insert(last.clone(), result);
    Ok(root)
}

// ---------------------------------------------------------------------------------------------
// The definition

#[derive(Debug, Default, Clone, Copy, Deserialize)]
enum Jitter {
    #[serde(rename = "FULL")]
    Full,
    #[default]
    #[serde(rename = "NONE")]
    Off,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Retrier {
    error_equals: Vec<String>,
    #[serde(default = "one")]
    interval_seconds: u64,
    #[serde(default = "three")]
    max_attempts: u32,
    #[serde(default = "two")]
    backoff_rate: f64,
    max_delay_seconds: Option<u64>,
    #[serde(default)]
    jitter_strategy: Jitter,
    #[serde(rename = "Comment", default)]
    _comment: Option<String>,
}

fn one() -> u64 {
    1
}
fn two() -> f64 {
    2.0
}
fn three() -> u32 {
    3
}

impl Retrier {
    /// Seconds before retry number `n` (0-based) under this retrier.
    fn delay(&self, n: u32) -> f64 {
        let exp = i32::try_from(n).unwrap_or(i32::MAX);
        let base = self.interval_seconds as f64 * self.backoff_rate.powi(exp);
        let capped = self.max_delay_seconds.map_or(base, |m| base.min(m as f64));
        match self.jitter_strategy {
            // Full jitter only needs to spread retries out, not be unpredictable, so a freshly
            // keyed std hasher is enough and spares a dependency on `rand`.
            Jitter::Full => capped * (RandomState::new().hash_one(n) as f64 / u64::MAX as f64),
            Jitter::Off => capped,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Catcher {
    error_equals: Vec<String>,
    next: String,
    #[serde(default, deserialize_with = "present")]
    result_path: Nullable<ResultPath>,
    #[serde(rename = "Comment", default)]
    _comment: Option<String>,
}

/// Whether an ErrorEquals list covers `error`; `States.TaskFailed` covers all but timeouts.
fn handles(equals: &[String], error: &str) -> bool {
    error != RUNTIME
        && equals
            .iter()
            .any(|e| e == error || e == ALL || (e == TASK_FAILED && error != TIMEOUT))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Task {
    resource: String,
    #[serde(default, deserialize_with = "present")]
    input_path: Nullable<Path>,
    parameters: Option<Template>,
    result_selector: Option<Template>,
    #[serde(default, deserialize_with = "present")]
    result_path: Nullable<ResultPath>,
    #[serde(default, deserialize_with = "present")]
    output_path: Nullable<Path>,
    timeout_seconds: Option<u64>,
    #[serde(default)]
    retry: Vec<Retrier>,
    #[serde(default)]
    catch: Vec<Catcher>,
    next: Option<String>,
    end: Option<bool>,
    #[serde(rename = "Comment", default)]
    _comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct MapState {
    #[serde(alias = "Iterator")]
    item_processor: Graph,
    items_path: Option<Path>,
    #[serde(alias = "Parameters")]
    item_selector: Option<Template>,
    #[serde(default)]
    max_concurrency: usize,
    #[serde(default, deserialize_with = "present")]
    input_path: Nullable<Path>,
    result_selector: Option<Template>,
    #[serde(default, deserialize_with = "present")]
    result_path: Nullable<ResultPath>,
    #[serde(default, deserialize_with = "present")]
    output_path: Nullable<Path>,
    #[serde(default)]
    retry: Vec<Retrier>,
    #[serde(default)]
    catch: Vec<Catcher>,
    next: Option<String>,
    end: Option<bool>,
    #[serde(rename = "Comment", default)]
    _comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Pass {
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
    parameters: Option<Template>,
    #[serde(default, deserialize_with = "present")]
    input_path: Nullable<Path>,
    #[serde(default, deserialize_with = "present")]
    result_path: Nullable<ResultPath>,
    #[serde(default, deserialize_with = "present")]
    output_path: Nullable<Path>,
    next: Option<String>,
    end: Option<bool>,
    #[serde(rename = "Comment", default)]
    _comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Choice {
    choices: Vec<Rule>,
    default: Option<String>,
    #[serde(default, deserialize_with = "present")]
    input_path: Nullable<Path>,
    #[serde(default, deserialize_with = "present")]
    output_path: Nullable<Path>,
    #[serde(rename = "Comment", default)]
    _comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Succeed {
    #[serde(default, deserialize_with = "present")]
    input_path: Nullable<Path>,
    #[serde(default, deserialize_with = "present")]
    output_path: Nullable<Path>,
    #[serde(rename = "Comment", default)]
    _comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Fail {
    error: Option<String>,
    cause: Option<String>,
    #[serde(rename = "Comment", default)]
    _comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "Type")]
enum State {
    Task(Task),
    Map(MapState),
    Choice(Choice),
    Pass(Pass),
    Succeed(Succeed),
    Fail(Fail),
}

/// The states that do work and so may be retried and caught.
#[derive(Clone, Copy)]
enum Work<'s> {
    Task(&'s Task),
    Map(&'s MapState),
}

impl<'s> Work<'s> {
    fn retry(self) -> &'s [Retrier] {
        match self {
            Work::Task(t) => &t.retry,
            Work::Map(m) => &m.retry,
        }
    }
    fn catch(self) -> &'s [Catcher] {
        match self {
            Work::Task(t) => &t.catch,
            Work::Map(m) => &m.catch,
        }
    }
    fn next(self) -> Option<&'s str> {
        match self {
            Work::Task(t) => t.next.as_deref(),
            Work::Map(m) => m.next.as_deref(),
        }
    }
}

fn flow(next: &Option<String>, end: Option<bool>) -> Result<Vec<&str>, String> {
    match (next, end) {
        (Some(n), None) => Ok(vec![n.as_str()]),
        (None, Some(true)) => Ok(vec![]),
        _ => Err("needs exactly one of Next or \"End\": true".into()),
    }
}

fn check_handlers<'s>(lists: impl Iterator<Item = &'s [String]>, what: &str) -> Result<(), String> {
    let lists: Vec<_> = lists.collect();
    for (i, list) in lists.iter().enumerate() {
        if list.is_empty() {
            return Err(format!("a {what} has an empty ErrorEquals"));
        }
        // A name given twice is a slip in the definition, harmless to the engine but a sign
        // that the list was not read.
        if let Some(twice) = list
            .iter()
            .enumerate()
            .find_map(|(j, e)| list[..j].contains(e).then_some(e))
        {
            return Err(format!("a {what}'s ErrorEquals names {twice} twice"));
        }
        if list.iter().any(|e| e == ALL) && (list.len() > 1 || i + 1 < lists.len()) {
            return Err(format!("States.ALL must be alone and in the last {what}"));
        }
    }
    Ok(())
}

impl State {
    /// Checks the state on its own and lists where it can go next.
    fn targets(&self) -> Result<Vec<&str>, String> {
        let work = match self {
            State::Task(t) => {
                if t.timeout_seconds == Some(0) {
                    return Err("TimeoutSeconds must be positive".into());
                }
                Work::Task(t)
            }
            State::Map(m) => Work::Map(m),
            State::Pass(p) => return flow(&p.next, p.end),
            State::Choice(c) if c.choices.is_empty() => return Err("Choices is empty".into()),
            State::Choice(c) => {
                let rules = c.choices.iter().map(|r| r.next.as_str());
                return Ok(rules.chain(c.default.as_deref()).collect());
            }
            State::Succeed(_) | State::Fail(_) => return Ok(vec![]),
        };
        let (next, end) = match self {
            State::Task(t) => (&t.next, t.end),
            State::Map(m) => (&m.next, m.end),
            _ => (&None, None),
        };
        if work.retry().iter().any(|r| r.backoff_rate < 1.0) {
            return Err("BackoffRate must be at least 1.0".into());
        }
        check_handlers(
            work.retry().iter().map(|r| r.error_equals.as_slice()),
            "Retrier",
        )?;
        check_handlers(
            work.catch().iter().map(|c| c.error_equals.as_slice()),
            "Catcher",
        )?;
        let mut targets = flow(next, end)?;
        targets.extend(work.catch().iter().map(|c| c.next.as_str()));
        Ok(targets)
    }
}

/// StartAt plus States: the machine itself or a Map's item processor.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawGraph")]
struct Graph {
    start_at: String,
    states: BTreeMap<String, State>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawGraph {
    start_at: String,
    states: Map<String, Value>,
    #[serde(rename = "Comment", default)]
    _comment: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawMachine {
    start_at: String,
    states: Map<String, Value>,
    timeout_seconds: Option<u64>,
    #[serde(rename = "Version", default)]
    _version: Option<String>,
    #[serde(rename = "Comment", default)]
    _comment: Option<String>,
}

impl TryFrom<RawGraph> for Graph {
    type Error = String;

    fn try_from(raw: RawGraph) -> Result<Graph, String> {
        Graph::build(raw.start_at, raw.states)
    }
}

impl Graph {
    fn build(start_at: String, raw: Map<String, Value>) -> Result<Graph, String> {
        let mut states = BTreeMap::new();
        for (name, v) in raw {
            let state = serde_json::from_value(v).map_err(|e| format!("state {name:?}: {e}"))?;
            states.insert(name, state);
        }
        let graph = Graph { start_at, states };
        // Every transition must land on a state, and every state must be reachable.
        let mut seen = BTreeSet::new();
        let mut todo = vec![graph.start_at.as_str()];
        while let Some(name) = todo.pop() {
            if !seen.insert(name) {
                continue;
            }
            let state = graph
                .states
                .get(name)
                .ok_or_else(|| format!("a transition names the missing state {name:?}"))?;
            todo.extend(
                state
                    .targets()
                    .map_err(|e| format!("state {name:?}: {e}"))?,
            );
        }
        if let Some(lost) = graph.states.keys().find(|k| !seen.contains(k.as_str())) {
            return Err(format!(
                "state {lost:?} is unreachable from {:?}",
                graph.start_at
            ));
        }
        Ok(graph)
    }

    fn resources(&self, out: &mut Vec<String>) {
        for state in self.states.values() {
            match state {
                State::Task(t) if !out.contains(&t.resource) => out.push(t.resource.clone()),
                State::Map(m) => m.item_processor.resources(out),
                _ => {}
            }
        }
    }
}

/// A loaded, checked definition.
#[derive(Debug)]
pub struct StateMachine {
    graph: Graph,
    timeout_seconds: Option<u64>,
}

impl StateMachine {
    /// Parses and checks a definition, refusing anything this interpreter would not execute.
    pub fn from_json(text: &str) -> Result<StateMachine, AslError> {
        let raw: RawMachine =
            serde_json::from_str(text).map_err(|e| AslError::Definition(e.to_string()))?;
        Ok(StateMachine {
            graph: Graph::build(raw.start_at, raw.states).map_err(AslError::Definition)?,
            timeout_seconds: raw.timeout_seconds,
        })
    }

    /// Every Task `Resource`, Map item processors included, each once.
    pub fn task_resources(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.graph.resources(&mut out);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Execution

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Multiplies every retry delay: 1.0 is real time, 0.0 never sleeps (tests).
    pub retry_delay_scale: f64,
    /// Caps Map concurrency on top of each state's MaxConcurrency; 0 is unbounded.
    pub max_map_concurrency: usize,
    /// State entries allowed per execution, Map iterations included; stops runaway loops.
    pub max_transitions: usize,
    /// Multiplies every TimeoutSeconds, the execution's included. On AWS each step has a
    /// Lambda's CPU to itself; on one machine every step of every execution shares its cores
    /// (and waits for a compute place), so the embedded runner allows more time.
    pub timeout_scale: f64,
}

impl RunOptions {
    fn timeout(&self, seconds: u64) -> Duration {
        Duration::try_from_secs_f64(seconds as f64 * self.timeout_scale.max(0.0))
            .unwrap_or(Duration::MAX)
    }
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            retry_delay_scale: 1.0,
            max_map_concurrency: 0,
            max_transitions: 10_000,
            timeout_scale: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionStatus {
    Succeeded,
    Failed { error: String, cause: String },
}

/// One state entered. Map iterations interleave, so `iteration` says which item it was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateVisit {
    pub state: String,
    /// Map item indexes leading here, outermost first; empty at the top level.
    pub iteration: Vec<usize>,
    /// Times the state's work ran: 1 plus its retries.
    pub attempts: u32,
}

#[derive(Debug, Clone)]
pub struct Execution {
    pub id: String,
    pub status: ExecutionStatus,
    pub output: Option<Value>,
    pub history: Vec<StateVisit>,
}

impl Execution {
    /// Top-level state names in the order entered.
    pub fn path(&self) -> Vec<&str> {
        let top = self.history.iter().filter(|v| v.iteration.is_empty());
        top.map(|v| v.state.as_str()).collect()
    }
}

/// Why a run of states stopped early: a failure the definition may handle, or a fatal error.
enum Stop {
    Failed(TaskFailure),
    Fatal(AslError),
}

impl From<TaskFailure> for Stop {
    fn from(f: TaskFailure) -> Stop {
        Stop::Failed(f)
    }
}

impl From<AslError> for Stop {
    fn from(e: AslError) -> Stop {
        Stop::Fatal(e)
    }
}

struct Exec {
    id: String,
    input: Value,
    started: String,
    transitions: AtomicUsize,
    history: Mutex<Vec<StateVisit>>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Exec {
    fn history(&self) -> MutexGuard<'_, Vec<StateVisit>> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enter(&self, limit: usize, state: &str, iteration: &[usize]) -> Result<usize, AslError> {
        if self.transitions.fetch_add(1, Ordering::Relaxed) >= limit {
            return Err(AslError::TransitionLimit {
                execution: self.id.clone(),
                limit,
            });
        }
        let mut history = self.history();
        history.push(StateVisit {
            state: state.to_string(),
            iteration: iteration.to_vec(),
            attempts: 1,
        });
        Ok(history.len() - 1)
    }

    /// The `$$` context object.
    fn context(&self, state: &str, entered: &str, retry_count: u32) -> Value {
        let name = self.id.rsplit(':').next().unwrap_or(&self.id);
        json!({
            "Execution": {"Id": self.id, "Name": name, "Input": self.input, "StartTime": self.started},
            "State": {"Name": state, "EnteredTime": entered, "RetryCount": retry_count},
        })
    }
}

pub struct Runner<E: TaskExecutor> {
    machine: Arc<StateMachine>,
    executor: Arc<E>,
    options: RunOptions,
}

impl<E: TaskExecutor> Runner<E> {
    pub fn new(machine: Arc<StateMachine>, executor: Arc<E>, options: RunOptions) -> Self {
        Runner {
            machine,
            executor,
            options,
        }
    }

    pub fn options_mut(&mut self) -> &mut RunOptions {
        &mut self.options
    }

    /// Runs one execution to its end. A failure the definition does not handle is a `Failed`
    /// execution; `Err` is kept for a definition that cannot be run (such as a runaway loop).
    pub async fn run(&self, execution_id: &str, input: Value) -> Result<Execution, AslError> {
        let x = Exec {
            id: execution_id.to_string(),
            input: input.clone(),
            started: now(),
            transitions: AtomicUsize::new(0),
            history: Mutex::new(Vec::new()),
        };
        let body = self.run_graph(&x, &self.machine.graph, input, &[]);
        let result = match self.machine.timeout_seconds {
            Some(s) => tokio::time::timeout(self.options.timeout(s), body)
                .await
                .unwrap_or_else(|_| {
                    let cause = format!(
                        "the execution ran longer than {} s",
                        self.options.timeout(s).as_secs_f64()
                    );
                    Err(TaskFailure::new(TIMEOUT, cause).into())
                }),
            None => body.await,
        };
        let (status, output) = match result {
            Ok(out) => (ExecutionStatus::Succeeded, Some(out)),
            Err(Stop::Failed(f)) => {
                debug!(execution = execution_id, error = %f.error, "execution failed");
                let TaskFailure { error, cause } = f;
                (ExecutionStatus::Failed { error, cause }, None)
            }
            Err(Stop::Fatal(e)) => return Err(e),
        };
        let history = x
            .history
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(Execution {
            id: execution_id.to_string(),
            status,
            output,
            history,
        })
    }

    fn run_graph<'a>(
        &'a self,
        x: &'a Exec,
        graph: &'a Graph,
        mut input: Value,
        iteration: &'a [usize],
    ) -> BoxFuture<'a, Result<Value, Stop>> {
        Box::pin(async move {
            let mut name = graph.start_at.as_str();
            loop {
                let slot = x.enter(self.options.max_transitions, name, iteration)?;
                debug!(execution = %x.id, state = name, ?iteration, "state entered");
                let state = graph
                    .states
                    .get(name)
                    .ok_or_else(|| AslError::Definition(format!("no state named {name:?}")))?;
                let entered = now();
                let ctx = x.context(name, &entered, 0);
                let (next, output) = match state {
                    State::Pass(p) => {
                        let eff = select(&p.input_path, &input, &ctx)?;
                        let eff = match &p.parameters {
                            Some(t) => t.render(&eff, &ctx)?,
                            None => eff,
                        };
                        let result = p.result.clone().unwrap_or(eff);
                        let out = place(&p.result_path, input, result)?;
                        (p.next.as_deref(), select(&p.output_path, &out, &ctx)?)
                    }
                    State::Choice(c) => {
                        let eff = select(&c.input_path, &input, &ctx)?;
                        let mut target = None;
                        for rule in &c.choices {
                            if rule.cond.eval(&eff, &ctx)? {
                                target = Some(rule.next.as_str());
                                break;
                            }
                        }
                        let target = target.or(c.default.as_deref()).ok_or_else(|| {
                            let cause = format!("no choice rule in {name:?} matched {eff}");
                            TaskFailure::new(NO_CHOICE_MATCHED, cause)
                        })?;
                        (Some(target), select(&c.output_path, &eff, &ctx)?)
                    }
                    State::Succeed(s) => {
                        let eff = select(&s.input_path, &input, &ctx)?;
                        return Ok(select(&s.output_path, &eff, &ctx)?);
                    }
                    State::Fail(f) => {
                        let error = f.error.clone().unwrap_or_default();
                        return Err(
                            TaskFailure::new(error, f.cause.clone().unwrap_or_default()).into()
                        );
                    }
                    State::Task(t) => {
                        self.guarded(x, name, &entered, Work::Task(t), input, slot, iteration)
                            .await?
                    }
                    State::Map(m) => {
                        self.guarded(x, name, &entered, Work::Map(m), input, slot, iteration)
                            .await?
                    }
                };
                match next {
                    Some(n) => (name, input) = (n, output),
                    None => return Ok(output),
                }
            }
        })
    }

    /// Runs a Task or Map with its Retry and Catch; returns where to go next and the output.
    #[allow(clippy::too_many_arguments)]
    async fn guarded<'s>(
        &self,
        x: &Exec,
        name: &str,
        entered: &str,
        work: Work<'s>,
        raw: Value,
        slot: usize,
        iteration: &[usize],
    ) -> Result<(Option<&'s str>, Value), Stop> {
        let retriers = work.retry();
        let mut used = vec![0u32; retriers.len()];
        let mut retry_count = 0u32;
        let failure = loop {
            let failure = match self
                .attempt(x, name, entered, work, &raw, retry_count, iteration)
                .await
            {
                Ok(out) => return Ok((work.next(), out)),
                Err(Stop::Failed(f)) => f,
                Err(fatal) => return Err(fatal),
            };
            // The first retrier naming the error decides, even when its attempts are used up.
            let Some(i) = retriers
                .iter()
                .position(|r| handles(&r.error_equals, &failure.error))
            else {
                break failure;
            };
            let (retrier, n) = (&retriers[i], used[i]);
            if n >= retrier.max_attempts {
                break failure;
            }
            used[i] += 1;
            retry_count += 1;
            if let Some(v) = x.history().get_mut(slot) {
                v.attempts += 1;
            }
            let delay = retrier.delay(n) * self.options.retry_delay_scale;
            debug!(execution = %x.id, state = name, error = %failure.error, retry = retry_count, delay, "retrying");
            if let Ok(d) = Duration::try_from_secs_f64(delay)
                && !d.is_zero()
            {
                tokio::time::sleep(d).await;
            }
        };
        let Some(catcher) = work
            .catch()
            .iter()
            .find(|c| handles(&c.error_equals, &failure.error))
        else {
            return Err(failure.into());
        };
        debug!(execution = %x.id, state = name, error = %failure.error, next = %catcher.next, "caught");
        let error = json!({"Error": failure.error, "Cause": failure.cause});
        Ok((
            Some(catcher.next.as_str()),
            place(&catcher.result_path, raw, error)?,
        ))
    }

    /// One try of a Task or Map, from InputPath to OutputPath.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        x: &Exec,
        name: &str,
        entered: &str,
        work: Work<'_>,
        raw: &Value,
        retry_count: u32,
        iteration: &[usize],
    ) -> Result<Value, Stop> {
        let ctx = x.context(name, entered, retry_count);
        let (result, selector, result_path, output_path) = match work {
            Work::Task(t) => {
                let eff = select(&t.input_path, raw, &ctx)?;
                let args = match &t.parameters {
                    Some(p) => p.render(&eff, &ctx)?,
                    None => eff,
                };
                let call = self.executor.invoke(&t.resource, args);
                let result = match t.timeout_seconds {
                    Some(s) => tokio::time::timeout(self.options.timeout(s), call)
                        .await
                        .unwrap_or_else(|_| {
                            Err(TaskFailure::new(
                                TIMEOUT,
                                format!(
                                    "{name} ran longer than {} s",
                                    self.options.timeout(s).as_secs_f64()
                                ),
                            ))
                        }),
                    None => call.await,
                }?;
                (result, &t.result_selector, &t.result_path, &t.output_path)
            }
            Work::Map(m) => {
                let eff = select(&m.input_path, raw, &ctx)?;
                let items = match &m.items_path {
                    Some(p) => p.resolve(&eff, &ctx)?,
                    None => eff.clone(),
                };
                let Value::Array(items) = items else {
                    return Err(runtime(format!(
                        "ItemsPath of {name:?} selected {items}, not an array"
                    ))
                    .into());
                };
                let limit = [m.max_concurrency, self.options.max_map_concurrency]
                    .into_iter()
                    .filter(|&n| n > 0)
                    .min()
                    .unwrap_or(usize::MAX)
                    .min(items.len())
                    .max(1);
                let mut results = vec![Value::Null; items.len()];
                let (eff, ctx) = (&eff, &ctx);
                let failed = &AtomicBool::new(false);
                let iterations = items.into_iter().enumerate().map(|(i, item)| async move {
                    if failed.load(Ordering::Relaxed) {
                        return Ok(None);
                    }
                    let input = match &m.item_selector {
                        Some(sel) => {
                            let mut item_ctx = ctx.clone();
                            if let Some(c) = item_ctx.as_object_mut() {
                                c.insert(
                                    "Map".into(),
                                    json!({"Item": {"Index": i, "Value": item}}),
                                );
                            }
                            sel.render(eff, &item_ctx)?
                        }
                        None => item,
                    };
                    let path = [iteration, &[i]].concat();
                    let out = self.run_graph(x, &m.item_processor, input, &path).await?;
                    Ok::<_, Stop>(Some((i, out)))
                });
                // Completion order, not item order. The first iteration to fail fails the Map:
                // no further iteration starts, and the running ones finish before the Map
                // fails, as their Lambda invocations do when Step Functions stops a Map. So
                // nothing a step is in the middle of writing lands after the Catch has run.
                let mut running = stream::iter(iterations).buffer_unordered(limit);
                let mut first_failure = None;
                while let Some(done) = running.next().await {
                    match done {
                        Ok(Some((i, out))) => {
                            if let Some(slot) = results.get_mut(i) {
                                *slot = out;
                            }
                        }
                        Ok(None) => {}
                        Err(stop) => {
                            failed.store(true, Ordering::Relaxed);
                            first_failure.get_or_insert(stop);
                        }
                    }
                }
                if let Some(stop) = first_failure {
                    return Err(stop);
                }
                (
                    Value::Array(results),
                    &m.result_selector,
                    &m.result_path,
                    &m.output_path,
                )
            }
        };
        let result = match selector {
            Some(s) => s.render(&result, &ctx)?,
            None => result,
        };
        let merged = place(result_path, raw.clone(), result)?;
        Ok(select(output_path, &merged, &ctx)?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::sync::Barrier;

    type Respond = dyn Fn(&str, &Value, usize) -> Result<Value, TaskFailure> + Send + Sync;

    /// Records every call; answers through `respond(resource, input, nth call to resource)`.
    /// An input field `sleep_ms` delays the answer; `barrier` makes calls wait for each other.
    struct Fake {
        calls: Mutex<Vec<(String, Value)>>,
        respond: Box<Respond>,
        barrier: Option<Barrier>,
        active: AtomicUsize,
        peak: AtomicUsize,
    }

    fn fake(
        respond: impl Fn(&str, &Value, usize) -> Result<Value, TaskFailure> + Send + Sync + 'static,
    ) -> Fake {
        Fake {
            calls: Mutex::new(Vec::new()),
            respond: Box::new(respond),
            barrier: None,
            active: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    fn echo() -> Fake {
        fake(|_, input, _| Ok(input.clone()))
    }

    impl Fake {
        fn calls(&self) -> Vec<(String, Value)> {
            self.calls.lock().unwrap().clone()
        }
        fn resources(&self) -> Vec<String> {
            self.calls().into_iter().map(|(r, _)| r).collect()
        }
    }

    #[async_trait]
    impl TaskExecutor for Fake {
        async fn invoke(&self, resource: &str, input: Value) -> Result<Value, TaskFailure> {
            let nth = {
                let mut calls = self.calls.lock().unwrap();
                let nth = calls.iter().filter(|(r, _)| r == resource).count();
                calls.push((resource.to_string(), input.clone()));
                nth
            };
            let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            if let Some(b) = &self.barrier {
                b.wait().await;
            }
            if let Some(ms) = input.get("sleep_ms").and_then(Value::as_u64) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            self.active.fetch_sub(1, Ordering::SeqCst);
            (self.respond)(resource, &input, nth)
        }
    }

    fn runner(definition: &Value, fake: Fake) -> (Runner<Fake>, Arc<Fake>) {
        let machine = StateMachine::from_json(&definition.to_string()).expect("definition");
        let fake = Arc::new(fake);
        let options = RunOptions {
            retry_delay_scale: 0.0,
            ..RunOptions::default()
        };
        (Runner::new(Arc::new(machine), fake.clone(), options), fake)
    }

    async fn run(definition: Value, fake: Fake, input: Value) -> (Execution, Arc<Fake>) {
        let (runner, fake) = runner(&definition, fake);
        (runner.run("exec-1", input).await.expect("runs"), fake)
    }

    fn failed(error: &str) -> impl Fn(&Execution) -> bool + '_ {
        move |e| matches!(&e.status, ExecutionStatus::Failed { error: got, .. } if got == error)
    }

    #[tokio::test]
    async fn input_parameters_result_selector_result_path_and_output_path_apply_in_order() {
        let def = json!({"StartAt": "T", "States": {"T": {
            "Type": "Task", "Resource": "r",
            "InputPath": "$.in",
            "Parameters": {"a.$": "$.x", "id.$": "$$.Execution.Id", "state.$": "$$.State.Name",
                           "lit": 1, "nested": {"b.$": "$.y[1]", "c": [{"d.$": "$['x']"}]}},
            "ResultSelector": {"got.$": "$.echo.a", "whole.$": "$.echo"},
            "ResultPath": "$.out.res",
            "OutputPath": "$.out",
            "End": true}}});
        let fake = fake(|_, input, _| Ok(json!({"echo": input, "noise": true})));
        let input = json!({"in": {"x": "X", "y": [0, 7]}, "out": {"kept": 1}});
        let (e, fake) = run(def, fake, input).await;
        let sent = json!({"a": "X", "id": "exec-1", "state": "T", "lit": 1,
                          "nested": {"b": 7, "c": [{"d": "X"}]}});
        assert_eq!(fake.calls(), [("r".to_string(), sent.clone())]);
        assert_eq!(e.status, ExecutionStatus::Succeeded);
        assert_eq!(
            e.output.unwrap(),
            json!({"kept": 1, "res": {"got": "X", "whole": sent}})
        );
    }

    #[tokio::test]
    async fn null_paths_discard_or_empty_and_pass_result_replaces() {
        let def = json!({"StartAt": "Keep", "States": {
            "Keep": {"Type": "Pass", "Result": {"ignored": 1}, "ResultPath": null, "Next": "Set"},
            "Set": {"Type": "Pass", "Result": "r", "ResultPath": "$.a.b", "Next": "Empty"},
            "Empty": {"Type": "Pass", "InputPath": null, "ResultPath": "$.seen", "Next": "End"},
            "End": {"Type": "Pass", "OutputPath": null, "End": true}}});
        let (e, _) = run(def, echo(), json!({"x": 1})).await;
        assert_eq!(e.output.unwrap(), json!({}));
        // The output of each state is not visible after OutputPath null; check via a twin.
        let def = json!({"StartAt": "Keep", "States": {
            "Keep": {"Type": "Pass", "Result": {"ignored": 1}, "ResultPath": null, "Next": "Set"},
            "Set": {"Type": "Pass", "Result": "r", "ResultPath": "$.a.b", "Next": "Empty"},
            "Empty": {"Type": "Pass", "InputPath": null, "ResultPath": "$.seen", "End": true}}});
        let (e, _) = run(def, echo(), json!({"x": 1})).await;
        assert_eq!(
            e.output.unwrap(),
            json!({"x": 1, "a": {"b": "r"}, "seen": {}})
        );
    }

    #[tokio::test]
    async fn a_missing_path_is_a_runtime_error_that_catch_all_does_not_handle() {
        let def = json!({"StartAt": "T", "States": {
            "T": {"Type": "Task", "Resource": "r", "Parameters": {"v.$": "$.nope"},
                  "Retry": [{"ErrorEquals": ["States.ALL"]}],
                  "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}], "End": true},
            "Caught": {"Type": "Succeed"}}});
        let (e, fake) = run(def, echo(), json!({"x": 1})).await;
        assert!(failed("States.Runtime")(&e), "{:?}", e.status);
        assert!(fake.calls().is_empty());
        assert_eq!(e.path(), ["T"]);
    }

    fn router() -> Value {
        json!({"StartAt": "Route", "States": {
            "Route": {"Type": "Choice", "Choices": [
                {"Variable": "$.event.key", "IsPresent": true, "Next": "Event"},
                {"And": [{"Variable": "$.flag", "IsPresent": true},
                         {"Variable": "$.flag", "BooleanEquals": true}], "Next": "Flagged"},
                {"Not": {"Variable": "$.kind", "StringEquals": "plain"}, "Next": "Odd"}],
             "Default": "Plain"},
            "Event": {"Type": "Succeed"}, "Flagged": {"Type": "Succeed"},
            "Odd": {"Type": "Succeed"}, "Plain": {"Type": "Succeed"}}})
    }

    #[tokio::test]
    async fn choice_routes_on_is_present_boolean_equals_and_not() {
        for (input, want) in [
            (json!({"event": {"key": "k"}, "kind": "plain"}), "Event"),
            (json!({"flag": true, "kind": "plain"}), "Flagged"),
            (json!({"flag": false, "kind": "x"}), "Odd"),
            (json!({"flag": false, "kind": "plain"}), "Plain"),
        ] {
            let (e, _) = run(router(), echo(), input.clone()).await;
            assert_eq!(e.path(), ["Route", want], "{input}");
            assert_eq!(e.output.unwrap(), input, "a Choice passes its input on");
        }
        // A comparison on a missing Variable is an error, not a quiet false.
        let (e, _) = run(router(), echo(), json!({"flag": false})).await;
        assert!(failed("States.Runtime")(&e), "{:?}", e.status);
    }

    #[tokio::test]
    async fn choice_without_match_or_default_fails_no_choice_matched() {
        let def = json!({"StartAt": "C", "States": {
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.n", "NumericEquals": 1, "Next": "S"}]},
            "S": {"Type": "Succeed"}}});
        let (e, _) = run(def.clone(), echo(), json!({"n": 1.0})).await;
        assert_eq!(e.status, ExecutionStatus::Succeeded);
        let (e, _) = run(def, echo(), json!({"n": 2})).await;
        assert!(failed("States.NoChoiceMatched")(&e), "{:?}", e.status);
    }

    fn flaky_task(max_attempts: u32) -> Value {
        json!({"StartAt": "T", "States": {
            "T": {"Type": "Task", "Resource": "r",
                  "Retry": [{"ErrorEquals": ["Other"], "MaxAttempts": 5},
                            {"ErrorEquals": ["Transient"], "MaxAttempts": max_attempts,
                             "IntervalSeconds": 3, "JitterStrategy": "FULL"}],
                  "Catch": [{"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.err", "Next": "Caught"}],
                  "End": true},
            "Caught": {"Type": "Pass", "End": true}}})
    }

    fn fails_first(n: usize) -> Fake {
        fake(move |_, _, nth| {
            if nth < n {
                Err(TaskFailure::new("Transient", format!("try {nth}")))
            } else {
                Ok(json!("done"))
            }
        })
    }

    #[tokio::test]
    async fn retries_until_success_and_counts_attempts() {
        let (e, fake) = run(flaky_task(3), fails_first(2), json!({"a": 1})).await;
        assert_eq!(fake.calls().len(), 3);
        assert_eq!(e.status, ExecutionStatus::Succeeded);
        assert_eq!(e.output.unwrap(), json!("done"));
        let visit = StateVisit {
            state: "T".into(),
            iteration: vec![],
            attempts: 3,
        };
        assert_eq!(e.history, [visit]);
    }

    #[tokio::test]
    async fn exhausted_retries_fall_to_catch_with_error_at_result_path() {
        let (e, fake) = run(flaky_task(2), fails_first(10), json!({"a": 1})).await;
        assert_eq!(fake.calls().len(), 3, "one try and two retries");
        assert_eq!(e.path(), ["T", "Caught"]);
        assert_eq!(
            e.output.unwrap(),
            json!({"a": 1, "err": {"Error": "Transient", "Cause": "try 2"}})
        );
        let (e, fake) = run(flaky_task(0), fails_first(10), json!({})).await;
        assert_eq!(fake.calls().len(), 1, "MaxAttempts 0 never retries");
        assert_eq!(e.path(), ["T", "Caught"]);
    }

    #[test]
    fn retry_delays_back_off_cap_and_jitter_within_bounds() {
        let r: Retrier = serde_json::from_value(json!({"ErrorEquals": ["x"], "IntervalSeconds": 2,
            "BackoffRate": 3, "MaxDelaySeconds": 10}))
        .unwrap();
        assert_eq!([r.delay(0), r.delay(1), r.delay(2)], [2.0, 6.0, 10.0]);
        let full: Retrier =
            serde_json::from_value(json!({"ErrorEquals": ["x"], "JitterStrategy": "FULL"}))
                .unwrap();
        assert!(
            (0..50)
                .map(|n| full.delay(n % 3))
                .all(|d| (0.0..=4.0).contains(&d))
        );
    }

    #[tokio::test]
    async fn a_task_timeout_is_states_timeout_and_catchable() {
        let def = json!({"StartAt": "T", "States": {
            "T": {"Type": "Task", "Resource": "r", "TimeoutSeconds": 1,
                  "Retry": [{"ErrorEquals": ["States.TaskFailed"]}],
                  "Catch": [{"ErrorEquals": ["States.Timeout"], "Next": "Caught"}], "End": true},
            "Caught": {"Type": "Pass", "End": true}}});
        let (e, fake) = run(def, echo(), json!({"sleep_ms": 30_000})).await;
        assert_eq!(
            fake.calls().len(),
            1,
            "States.TaskFailed does not cover timeouts"
        );
        assert_eq!(e.output.unwrap()["Error"], "States.Timeout");
    }

    #[tokio::test]
    async fn timeouts_are_scaled_by_the_run_options() {
        let def = json!({"StartAt": "T", "TimeoutSeconds": 10, "States": {
            "T": {"Type": "Task", "Resource": "r", "TimeoutSeconds": 1, "End": true}}});
        // 1 s scaled to 0.1 s: a 400 ms step times out, and the cause says the real limit.
        let (mut r, _) = runner(&def, echo());
        r.options_mut().timeout_scale = 0.1;
        let e = r.run("e", json!({"sleep_ms": 400})).await.unwrap();
        let ExecutionStatus::Failed { error, cause } = &e.status else {
            panic!("{e:?}");
        };
        assert_eq!(error, "States.Timeout");
        assert!(cause.contains("longer than 0.1 s"), "{cause}");
        // The execution's own timeout too: 10 s scaled to 0.2 s.
        let def = json!({"StartAt": "T", "TimeoutSeconds": 10, "States": {
            "T": {"Type": "Task", "Resource": "r", "End": true}}});
        let (mut r, _) = runner(&def, echo());
        r.options_mut().timeout_scale = 0.02;
        let e = r.run("e", json!({"sleep_ms": 400})).await.unwrap();
        assert!(failed("States.Timeout")(&e), "{e:?}");
        // Unscaled, the same step finishes.
        let (r, _) = runner(&def, echo());
        let e = r.run("e", json!({"sleep_ms": 400})).await.unwrap();
        assert_eq!(e.status, ExecutionStatus::Succeeded);
    }

    #[tokio::test]
    async fn a_fail_state_ends_the_execution_failed_with_its_error_and_cause() {
        let def = json!({"StartAt": "F", "States": {
            "F": {"Type": "Fail", "Error": "Nope", "Cause": "because", "Comment": "c"}}});
        let (e, _) = run(def, echo(), json!({})).await;
        let want = ExecutionStatus::Failed {
            error: "Nope".into(),
            cause: "because".into(),
        };
        assert_eq!(e.status, want);
        assert!(e.output.is_none());
    }

    fn mapper(max_concurrency: usize, selector: bool) -> Value {
        let mut def = json!({"StartAt": "M", "States": {"M": {
            "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": max_concurrency,
            "ItemProcessor": {"StartAt": "Work", "States": {
                "Work": {"Type": "Task", "Resource": "work", "End": true}}},
            "ResultPath": "$.out", "End": true}}});
        if selector {
            def["States"]["M"]["ItemSelector"] = json!({"i.$": "$$.Map.Item.Index",
                "sleep_ms.$": "$$.Map.Item.Value.ms", "tag.$": "$.tag"});
        }
        def
    }

    #[tokio::test]
    async fn map_runs_iterations_together_and_keeps_item_order() {
        let items: Vec<_> = [60, 30, 0].iter().map(|ms| json!({"ms": ms})).collect();
        let mut f = fake(|_, input, _| Ok(json!({"i": input["i"], "tag": input["tag"]})));
        // Without overlap the first iteration would wait at the barrier forever.
        f.barrier = Some(Barrier::new(3));
        let input = json!({"items": items, "tag": "t"});
        let (runner, fake) = runner(&mapper(0, true), f);
        let e = tokio::time::timeout(Duration::from_secs(10), runner.run("m", input))
            .await
            .expect("iterations overlap")
            .unwrap();
        assert_eq!(fake.peak.load(Ordering::SeqCst), 3);
        let out = e.output.unwrap();
        let want = json!([{"i": 0, "tag": "t"}, {"i": 1, "tag": "t"}, {"i": 2, "tag": "t"}]);
        assert_eq!(out["out"], want);
        let iterations: Vec<_> = e.history.iter().map(|v| v.iteration.clone()).collect();
        assert_eq!(iterations.len(), 4);
        assert!(iterations.contains(&vec![2]));
    }

    #[tokio::test]
    async fn map_concurrency_is_bounded_by_the_state_and_the_options() {
        let items: Vec<_> = (0..6).map(|_| json!({"sleep_ms": 20})).collect();
        let input = json!({"items": items});
        let (_, fake) = run(mapper(2, false), echo(), input.clone()).await;
        assert_eq!(fake.peak.load(Ordering::SeqCst), 2);
        let (mut runner, fake) = runner(&mapper(0, false), echo());
        runner.options_mut().max_map_concurrency = 3;
        runner.run("m", input).await.unwrap();
        assert_eq!(fake.peak.load(Ordering::SeqCst), 3);
        assert_eq!(fake.calls().len(), 6);
    }

    #[tokio::test]
    async fn a_failing_iteration_fails_the_map_and_its_catch_takes_over() {
        let mut def = mapper(0, false);
        def["States"]["M"]["Catch"] =
            json!([{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}]);
        def["States"]["Caught"] = json!({"Type": "Succeed"});
        let f = fake(|_, input, _| match input["bad"].as_bool() {
            Some(true) => Err(TaskFailure::new("Broken", "item")),
            _ => Ok(json!(1)),
        });
        let input = json!({"items": [{"bad": false}, {"bad": true}]});
        let (e, _) = run(def, f, input).await;
        assert_eq!(e.path(), ["M", "Caught"]);
        assert_eq!(
            e.output.unwrap()["error"],
            json!({"Error": "Broken", "Cause": "item"})
        );
    }

    #[tokio::test]
    async fn a_failing_map_lets_running_iterations_finish_and_starts_no_more() {
        let mut def = mapper(2, false);
        def["States"]["M"]["Catch"] =
            json!([{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}]);
        def["States"]["Caught"] = json!({"Type": "Succeed"});
        let f = fake(|_, input, _| match input["bad"].as_bool() {
            Some(true) => Err(TaskFailure::new("Broken", "item")),
            _ => Ok(json!(1)),
        });
        // The slow one is running when the bad one fails; the third would start after.
        let items = json!([{"sleep_ms": 200}, {"bad": true, "sleep_ms": 20}, {"bad": false}]);
        let (e, fake) = run(def, f, json!({"items": items})).await;
        assert_eq!(e.path(), ["M", "Caught"]);
        assert_eq!(
            fake.active.load(Ordering::SeqCst),
            0,
            "the slow iteration ran to its end before the Catch"
        );
        assert_eq!(
            fake.calls().len(),
            2,
            "no iteration started after the failure"
        );
    }

    #[test]
    fn strict_parsing_refuses_what_the_runner_would_not_execute() {
        let bad = [
            (
                json!({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 1, "End": true}}}),
                "Wait",
            ),
            (
                json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "Foo": 1, "End": true}}}),
                "Foo",
            ),
            (
                json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "Next": "Q"}}}),
                "missing state",
            ),
            (
                json!({"StartAt": "P", "States": {"P": {"Type": "Pass"}}}),
                "Next or",
            ),
            (
                json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}, "Q": {"Type": "Succeed"}}}),
                "unreachable",
            ),
            (
                json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "Parameters": {"a.$": "States.Format('x')"}, "End": true}}}),
                "intrinsics",
            ),
            (
                json!({"StartAt": "C", "States": {"C": {"Type": "Choice", "Choices": [{"Variable": "$.a", "StringLessThan": "x", "Next": "S"}]}, "S": {"Type": "Succeed"}}}),
                "StringLessThan",
            ),
            (
                json!({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true,
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "T"}, {"ErrorEquals": ["x"], "Next": "T"}]}}}),
                "States.ALL",
            ),
            (
                json!({"StartAt": "M", "States": {"M": {"Type": "Map", "End": true, "ItemProcessor":
                {"StartAt": "X", "States": {"X": {"Type": "Task", "Resource": "r", "End": true, "HeartbeatSeconds": 5}}}}}}),
                "HeartbeatSeconds",
            ),
            (
                json!({"StartAt": "P", "QueryLanguage": "JSONata", "States": {"P": {"Type": "Pass", "End": true}}}),
                "QueryLanguage",
            ),
            (
                json!({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true,
                "Retry": [{"ErrorEquals": ["x", "y", "x"]}]}}}),
                "names x twice",
            ),
        ];
        for (def, why) in bad {
            let err = StateMachine::from_json(&def.to_string())
                .expect_err(why)
                .to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[tokio::test]
    async fn a_loop_hits_the_transition_cap() {
        let def = json!({"StartAt": "A", "States": {
            "A": {"Type": "Pass", "Next": "B"}, "B": {"Type": "Pass", "Next": "A"}}});
        let (mut runner, _) = runner(&def, echo());
        runner.options_mut().max_transitions = 50;
        let err = runner.run("loop", json!({})).await.unwrap_err();
        assert!(
            matches!(err, AslError::TransitionLimit { limit: 50, .. }),
            "{err}"
        );
    }

    // The real definition, with steps faked by resource name.

    const PIPELINE: &str = include_str!("../../../statemachine/image_pipeline.asl.json");
    const VALIDATE: &str = "${ValidateFunctionArn}";
    const RESIZE: &str = "${ResizeFunctionArn}";
    const FILTER: &str = "${FilterFunctionArn}";
    const STORE: &str = "${StoreFunctionArn}";
    const NOTIFY: &str = "${NotifyFunctionArn}";

    fn steps(duplicate: bool, resize: Result<Value, TaskFailure>) -> Fake {
        fake(move |resource, input, nth| match resource {
            VALIDATE => {
                Ok(json!({"duplicate": duplicate, "imageId": "img", "key": input["upload"]["key"]}))
            }
            RESIZE if nth == 0 => Err(TaskFailure::new("Transient", "throttled")),
            RESIZE => resize.clone(),
            FILTER => Ok(input.clone()),
            STORE => Ok(
                json!({"name": input["name"], "key": format!("r/{}", input["name"].as_str().unwrap())}),
            ),
            NOTIFY => Ok(input.clone()),
            other => panic!("unexpected resource {other}"),
        })
    }

    async fn pipeline(fake: Fake, input: Value) -> (Execution, Arc<Fake>) {
        let machine = StateMachine::from_json(PIPELINE).expect("the real definition loads");
        let fake = Arc::new(fake);
        let options = RunOptions {
            retry_delay_scale: 0.0,
            ..RunOptions::default()
        };
        let runner = Runner::new(Arc::new(machine), fake.clone(), options);
        (runner.run("arn:exec:e1", input).await.unwrap(), fake)
    }

    fn resized() -> Result<Value, TaskFailure> {
        Ok(json!({"items": [{"name": "large"}, {"name": "thumb"}], "sha256": "x"}))
    }

    #[test]
    fn the_definition_names_every_step_once() {
        let machine = StateMachine::from_json(PIPELINE).unwrap();
        let mut resources = machine.task_resources();
        resources.sort();
        let mut want = [
            VALIDATE,
            RESIZE,
            pipeline::RESIZE_LARGE_RESOURCE,
            FILTER,
            STORE,
            NOTIFY,
        ];
        want.sort();
        assert_eq!(resources, want);
    }

    #[tokio::test]
    async fn the_definition_runs_every_step_on_success() {
        let upload = json!({"key": "uploads/o/1/a.jpg", "size": 3});
        let (e, fake) = pipeline(steps(false, resized()), upload.clone()).await;
        assert_eq!(e.status, ExecutionStatus::Succeeded);
        let calls = fake.resources();
        assert_eq!(calls.first().map(String::as_str), Some(VALIDATE));
        assert_eq!(
            &calls[1..3],
            [RESIZE, RESIZE],
            "the Transient failure is retried"
        );
        assert_eq!(calls.last().map(String::as_str), Some(NOTIFY));
        let mut middle = calls[3..calls.len() - 1].to_vec();
        middle.sort();
        assert_eq!(middle, [FILTER, FILTER, STORE, STORE]);
        assert_eq!(
            fake.calls()[0].1,
            json!({"upload": upload, "executionId": "arn:exec:e1"})
        );
        let job = json!({"duplicate": false, "imageId": "img", "key": "uploads/o/1/a.jpg"});
        assert_eq!(fake.calls()[1].1, job, "Resize gets $.job");
        assert_eq!(
            e.output.clone().unwrap(),
            json!({"outcome": "success", "job": job, "sha256": "x",
                   "renditions": [{"name": "large", "key": "r/large"}, {"name": "thumb", "key": "r/thumb"}]})
        );
        assert_eq!(
            e.path(),
            [
                "Route",
                "Validate",
                "IsDuplicate",
                "BySize",
                "Resize",
                "Renditions",
                "NotifySuccess"
            ]
        );
        let resize = e.history.iter().find(|v| v.state == "Resize").unwrap();
        assert_eq!(resize.attempts, 2);
    }

    #[tokio::test]
    async fn an_s3_event_is_reshaped_and_a_duplicate_ends_early() {
        let event = json!({"detail": {"bucket": {"name": "b"},
            "object": {"key": "uploads/x", "etag": "e", "size": 3}}});
        let (e, fake) = pipeline(steps(true, resized()), event).await;
        assert_eq!(e.status, ExecutionStatus::Succeeded);
        assert_eq!(
            e.path(),
            [
                "Route",
                "FromS3Event",
                "Validate",
                "IsDuplicate",
                "AlreadyProcessing"
            ]
        );
        let upload = json!({"bucket": "b", "key": "uploads/x", "etag": "e", "size": 3,
            "keyEncoded": true});
        assert_eq!(
            fake.calls(),
            [(
                VALIDATE.to_string(),
                json!({"upload": upload, "executionId": "arn:exec:e1"})
            )]
        );
    }

    /// A run whose NotifySuccess fails with `error` and whose NotifyFailure answers `notified`.
    async fn notify_success_fails(error: TaskFailure, notified: Value) -> (Execution, Arc<Fake>) {
        pipeline(
            fake(move |resource, input, _| match resource {
                VALIDATE => Ok(json!({"duplicate": false, "imageId": "img"})),
                RESIZE => resized(),
                FILTER => Ok(input.clone()),
                STORE => Ok(json!({"name": input["name"]})),
                NOTIFY if input["outcome"] == "success" => Err(error.clone()),
                NOTIFY => Ok(notified.clone()),
                other => panic!("unexpected resource {other}"),
            }),
            json!({"key": "uploads/o/img/a.jpg"}),
        )
        .await
    }

    #[tokio::test]
    async fn a_completion_that_could_not_be_announced_ends_in_its_own_fail_state() {
        let (e, fake) = notify_success_fails(
            TaskFailure::new("Permanent", "events topic: access denied"),
            json!({"imageId": "img", "status": "COMPLETE",
                "error": {"type": "Permanent", "message": "events topic: access denied"}}),
        )
        .await;
        let ExecutionStatus::Failed { error, .. } = &e.status else {
            panic!("{e:?}");
        };
        assert_eq!(error, "CompletionNotAnnounced");
        assert_eq!(
            e.path()[e.path().len() - 4..],
            [
                "NotifySuccess",
                "NotifyFailure",
                "AfterFailure",
                "CompletedNotAnnounced"
            ]
        );
        let last = fake.calls().pop().unwrap().1;
        assert_eq!(last["state"]["error"]["Error"], "Permanent");
    }

    #[tokio::test]
    async fn a_large_source_is_resized_by_resize_large() {
        let (e, fake) = pipeline(
            fake(|resource, input, _| match resource {
                VALIDATE => Ok(json!({"duplicate": false, "imageId": "img", "large": true})),
                pipeline::RESIZE_LARGE_RESOURCE => resized(),
                FILTER => Ok(input.clone()),
                STORE => Ok(json!({"name": input["name"]})),
                NOTIFY => Ok(input.clone()),
                other => panic!("unexpected resource {other}"),
            }),
            json!({"key": "uploads/o/img/pano.jpg"}),
        )
        .await;
        assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
        assert_eq!(
            e.path()[..5],
            ["Route", "Validate", "IsDuplicate", "BySize", "ResizeLarge"]
        );
        assert!(!fake.resources().iter().any(|r| r == RESIZE));
    }

    #[tokio::test]
    async fn a_completion_announced_before_notify_failed_ends_succeeded() {
        let (e, _) = notify_success_fails(
            TaskFailure::new("States.Timeout", ""),
            json!({"imageId": "img", "status": "COMPLETE"}),
        )
        .await;
        assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
        assert_eq!(e.path().last(), Some(&"CompletedAndAnnounced"));
    }

    #[tokio::test]
    async fn a_folder_object_ends_the_execution_without_a_step() {
        let event = json!({"detail": {"bucket": {"name": "b"},
            "object": {"key": "uploads/new folder/", "etag": "e", "size": 0}}});
        let (e, fake) = pipeline(steps(false, resized()), event).await;
        assert_eq!(e.status, ExecutionStatus::Succeeded);
        assert_eq!(e.path(), ["Route", "FolderObject"]);
        assert!(fake.calls().is_empty());
    }

    #[tokio::test]
    async fn a_rejected_image_is_notified_as_a_failure_and_the_execution_fails() {
        let cause = r#"{"errorType":"InvalidImage","errorMessage":"truncated"}"#;
        let upload = json!({"key": "uploads/o/1/a.jpg"});
        let (e, fake) = pipeline(
            steps(false, Err(TaskFailure::new("InvalidImage", cause))),
            upload.clone(),
        )
        .await;
        let ExecutionStatus::Failed { error, .. } = &e.status else {
            panic!("{:?}", e.status)
        };
        assert_eq!(error, "ImageNotProcessed");
        assert_eq!(fake.resources(), [VALIDATE, RESIZE, RESIZE, NOTIFY]);
        let job = json!({"duplicate": false, "imageId": "img", "key": "uploads/o/1/a.jpg"});
        let mut state = upload;
        state["job"] = job;
        state["error"] = json!({"Error": "InvalidImage", "Cause": cause});
        let notified = json!({"outcome": "failure", "state": state, "executionId": "arn:exec:e1"});
        assert_eq!(fake.calls()[3].1, notified);
        assert_eq!(
            e.path(),
            [
                "Route",
                "Validate",
                "IsDuplicate",
                "BySize",
                "Resize",
                "NotifyFailure",
                "AfterFailure",
                "Failed"
            ]
        );
    }
}

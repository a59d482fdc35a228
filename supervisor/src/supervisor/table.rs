//! One version of the routes, compiled: for each route its executor and the stack of
//! layers in front of it. `execute` reads it; a reload swaps it whole.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use executor_core::backend::MetaRef;
use executor_core::{Executor, Job, Policy, Route, ShutdownMode, TaskMeta};

use crate::config::{ConfigError, ExecutorConfig, Kind, PolicyConfig, RoutePos, RouteSpec};
use crate::layer::limiter::Limiter;
use crate::layer::{Base, Layer, LayerContext, Limit, Service};
use crate::registry::{ExecutorPlan, Registry};
use crate::scheduler::Core;

/// What the supervisor was given in code, kept for every reload.
#[derive(Clone, Default)]
pub(crate) struct CodeParts {
    /// A policy written in code; without one, the policy file routes.
    pub(crate) policy: Option<Arc<dyn Policy>>,
    /// Executors given in code, by name.
    pub(crate) executors: BTreeMap<String, Arc<dyn Executor>>,
    /// Layers for every route, outermost first.
    pub(crate) layers: Vec<Arc<dyn Layer>>,
    /// Layers for the routes of one rule, by the rule's name, outermost first.
    pub(crate) route_layers: Vec<(String, Arc<dyn Layer>)>,
}

/// Gives each table an id of its own, for [`LastRoute`].
static TABLE_IDS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Where this thread last routed a task by the policy file's rules.
    static LAST_ROUTE: Cell<LastRoute> = const { Cell::new(LastRoute::EMPTY) };
}

/// One routing decision remembered: tasks of a program mostly repeat the same few
/// `&'static str` names, and a hit costs two compares instead of a walk over the rules.
/// Only untagged tasks with a static name and a rule that cannot change its answer (not
/// an auto rule) are remembered; the table's id makes a reload (a new table) miss.
#[derive(Clone, Copy)]
struct LastRoute {
    table: u64,
    /// The name's address and length: a `&'static str` never moves or changes, so equal
    /// address and length mean the same name (a different name at a new address only
    /// misses).
    name: *const u8,
    len: usize,
    index: usize,
}

impl LastRoute {
    const EMPTY: LastRoute = LastRoute {
        table: 0,
        name: std::ptr::null(),
        len: 0,
        index: 0,
    };

    fn new(table: u64, name: &'static str, index: usize) -> Self {
        LastRoute {
            table,
            name: name.as_ptr(),
            len: name.len(),
            index,
        }
    }

    #[inline]
    fn hit(self, table: u64, name: &'static str) -> Option<usize> {
        (self.table == table && self.name == name.as_ptr() && self.len == name.len())
            .then_some(self.index)
    }
}

/// The compiled routes.
pub(crate) struct Table {
    /// This table's own id (see [`LastRoute`]).
    id: u64,
    pub(crate) config: Option<Arc<PolicyConfig>>,
    /// What routes: the code policy, or the policy file.
    policy: Arc<dyn Policy>,
    /// The policy again when its `observe` must hear of every task (a code policy; the
    /// policy file learns nothing, so its tasks skip the measuring).
    pub(crate) observer: Option<Arc<dyn Policy>>,
    /// True when a policy written in code routes (the file, if any, only gives settings).
    code_policy: bool,
    /// When the policy file routes: where each position of the file was compiled, so
    /// `select` finds a route by index.
    file_positions: Option<FilePositions>,
    pub(crate) executors: BTreeMap<String, Arc<dyn Executor>>,
    /// For the policy file: its rules in order, then the defaults. For a code policy: a
    /// route per executor and rule name that has layers, then one per executor for any
    /// other rule name.
    routes: Vec<Compiled>,
    /// For the policy file: the routes static metas took (see [`StaticRoutes`]).
    static_routes: StaticRoutes,
}

/// The routes tasks with a static meta (`MetaRef::Static`: what `submit` and friends
/// give an anonymous task, or a `static` meta of the program's) took through one table,
/// by the meta's address: such a meta lives for the whole program and never changes, so
/// its address stands for its whole content (name, tags, key), and a rule that cannot
/// change its answer (not an auto rule) routes it the same way every time. A hit is one
/// load and a compare, where matching the rules walks them.
///
/// Each slot is one word, so a slot is never read half written: the address in the high
/// 48 bits, the route's index + 1 in the low 16 (0: empty). Two metas that share a slot
/// take turns in it; a meta whose address or index does not fit is not remembered.
struct StaticRoutes([AtomicU64; STATIC_SLOTS]);

const STATIC_SLOTS: usize = 8;

impl StaticRoutes {
    fn new() -> Self {
        StaticRoutes(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    #[inline]
    fn slot(&self, addr: u64) -> &AtomicU64 {
        // Statics sit close together: mix the address's bits before taking a few.
        let mixed = addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61;
        &self.0[mixed as usize % STATIC_SLOTS]
    }

    #[inline]
    fn get(&self, meta: &'static TaskMeta) -> Option<usize> {
        let addr = std::ptr::from_ref(meta) as u64;
        let entry = self.slot(addr).load(Ordering::Relaxed);
        let index = (entry & 0xFFFF) as usize;
        (entry >> 16 == addr && index != 0).then(|| index - 1)
    }

    fn put(&self, meta: &'static TaskMeta, index: usize) {
        let addr = std::ptr::from_ref(meta) as u64;
        if addr >> 48 == 0 && index < 0xFFFF {
            // Relaxed: the entry is the whole of what is shared, and the routes it
            // indexes are the table's, which the reader reaches through its own reference.
            self.slot(addr)
                .store((addr << 16) | (index as u64 + 1), Ordering::Relaxed);
        }
    }
}

/// Where the policy file's routes sit in a table's compiled routes (the rules first, at
/// their own index).
struct FilePositions {
    /// By rule: the index of its auto CPU route (meaningful for auto rules only).
    auto_cpu: Vec<usize>,
    /// By rule: the index of its auto blocking route (meaningful for auto rules only).
    auto_blocking: Vec<usize>,
    /// The index of the defaults.
    defaults: usize,
}

impl FilePositions {
    /// The index of the compiled route at `pos`, and whether it always answers the same
    /// (so it may be remembered: not an auto rule's).
    #[inline]
    fn index(&self, pos: RoutePos) -> (usize, bool) {
        match pos {
            RoutePos::Rule(i) => (i, true),
            RoutePos::Learning(i) => (i, false),
            RoutePos::AutoCpu(i) => (self.auto_cpu[i], false),
            RoutePos::AutoBlocking(i) => (self.auto_blocking[i], false),
            RoutePos::Defaults => (self.defaults, true),
        }
    }
}

/// A route with its executor and layers resolved. A task keeps the stack it was routed
/// to for its whole life, retries included, even across reloads.
pub(crate) struct Compiled {
    pub(crate) route: Route,
    /// True when this entry serves any rule name (a code policy's plain route).
    any_rule: bool,
    pub(crate) executor: Arc<dyn Executor>,
    /// The layers in front of the executor; `None` when there are none, so the job goes
    /// straight to the executor.
    pub(crate) service: Option<Arc<dyn Service>>,
    /// The limit of the policy file's settings and its budget (kept by a reload when the
    /// limit did not change).
    limiter: Option<(Limit, Arc<Limiter<Job>>)>,
}

impl Table {
    /// The compiled route for a task, through the policy; `Err` with the executor's name
    /// when the policy names an executor this supervisor does not have.
    #[inline]
    pub(crate) fn select(&self, meta: &MetaRef) -> Result<&Compiled, &str> {
        // A static meta this table routed before: one load, no call.
        if let MetaRef::Static(m) = meta
            && let Some(index) = self.static_routes.get(m)
            && let Some(route) = self.routes.get(index)
        {
            return Ok(route);
        }
        self.select_slow(meta)
    }

    /// [`select`](Self::select) past its one-load fast path.
    #[inline(never)]
    fn select_slow(&self, meta: &MetaRef) -> Result<&Compiled, &str> {
        if let (Some(at), Some(config)) = (&self.file_positions, &self.config) {
            let statics = match meta {
                MetaRef::Static(m) => Some(*m),
                MetaRef::Shared(_) => None,
            };
            // A task named by a `&'static str`, with no tags, that this thread routed
            // last through this table goes where it went then, without matching rules.
            let name = meta.static_name().filter(|_| meta.tags().len() == 0);
            if let Some(name) = name
                && let Some(index) = LAST_ROUTE.with(|last| last.get().hit(self.id, name))
            {
                return Ok(&self.routes[index]);
            }
            let (index, fixed) = at.index(config.route_pos(meta));
            if fixed {
                if let Some(m) = statics {
                    self.static_routes.put(m, index);
                } else if let Some(name) = name {
                    LAST_ROUTE.with(|last| last.set(LastRoute::new(self.id, name, index)));
                }
            }
            return Ok(&self.routes[index]);
        }
        self.select_code(meta)
    }

    /// The compiled route for a task of `meta`, found the long way and not remembered: for
    /// a question asked once for many tasks (`map_width`), not on each task's path.
    pub(crate) fn select_meta(&self, meta: &TaskMeta) -> Result<&Compiled, &str> {
        if let (Some(at), Some(config)) = (&self.file_positions, &self.config) {
            return Ok(&self.routes[at.index(config.route_pos(meta)).0]);
        }
        self.select_code(meta)
    }

    /// The compiled route a policy written in code gives a task.
    fn select_code(&self, meta: &TaskMeta) -> Result<&Compiled, &str> {
        let route = self.policy.route(meta);
        self.routes
            .iter()
            .find(|c| !c.any_rule && c.route == *route)
            .or_else(|| {
                self.routes
                    .iter()
                    .find(|c| c.any_rule && c.route.executor() == route.executor())
            })
            .ok_or(route.executor())
    }

    /// The route the policy gives a task.
    pub(crate) fn route(&self, meta: &TaskMeta) -> &Route {
        self.policy.route(meta)
    }

    /// The running executor that `exec` describes, if this table has one just like it.
    fn reusable(&self, exec: &ExecutorConfig) -> Option<Arc<dyn Executor>> {
        let old = self
            .config
            .as_ref()?
            .executors()
            .iter()
            .find(|e| e.name() == exec.name())?;
        if old.same_as(exec) {
            self.executors.get(exec.name()).cloned()
        } else {
            None
        }
    }

    /// The budget a route of `old` kept for this rule, executor and limit.
    fn limiter_for(&self, route: &Route, limit: &Limit) -> Option<Arc<Limiter<Job>>> {
        self.routes
            .iter()
            .filter(|c| c.route == *route)
            .find_map(|c| match &c.limiter {
                Some((l, limiter)) if l == limit => Some(limiter.clone()),
                _ => None,
            })
    }

    /// Which route a task takes and why.
    pub(crate) fn explain(&self, meta: &TaskMeta) -> crate::routing::Explanation {
        match (self.code_policy, &self.config) {
            (false, Some(config)) => config.explain(meta),
            _ => crate::routing::explain_code(meta, self.policy.route(meta)),
        }
    }

    /// How many routes the policy file has (0 for a code policy).
    pub(crate) fn rules(&self) -> usize {
        self.config.as_ref().map_or(0, |c| c.routes().len())
    }
}

enum Plan {
    Reuse(Arc<dyn Executor>),
    Build(ExecutorPlan),
}

/// Builds a table, reusing executors (and the budgets of unchanged limits) from `old`.
/// Checks every executor's options before building any; returns the table and the
/// executors it built.
pub(crate) fn compile(
    registry: &Registry,
    config: Option<PolicyConfig>,
    code: &CodeParts,
    core: &Arc<Core>,
    old: Option<&Table>,
) -> Result<(Table, Vec<Arc<dyn Executor>>), ConfigError> {
    let origin = config
        .as_ref()
        .map_or(std::path::Path::new("<code>"), |c| c.origin())
        .to_path_buf();
    let mut plans = Vec::new();
    for exec in config.iter().flat_map(|c| c.executors()) {
        if code.executors.contains_key(exec.name()) {
            return Err(ConfigError::new(
                Kind::Build,
                &origin,
                format!(
                    "executor \"{}\" is given both in code and in the policy file",
                    exec.name()
                ),
            ));
        }
        match old.and_then(|o| o.reusable(exec)) {
            Some(running) => plans.push(Plan::Reuse(running)),
            None => plans.push(Plan::Build(
                registry.prepare_one(config.as_ref().expect("has executors"), exec)?,
            )),
        }
    }
    let mut executors = code.executors.clone();
    let mut built: Vec<Arc<dyn Executor>> = Vec::new();
    for (exec, plan) in config.iter().flat_map(|c| c.executors()).zip(plans) {
        let e = match plan {
            Plan::Reuse(e) => e,
            Plan::Build(p) => match p() {
                Ok(e) => {
                    built.push(e.clone());
                    e
                }
                Err(err) => {
                    for b in &built {
                        b.shutdown(ShutdownMode::Now);
                    }
                    return Err(exec.options().build_error(err));
                }
            },
        };
        executors.insert(exec.name().to_owned(), e);
    }
    let config = config.map(Arc::new);
    let compile_one = |route: &Route, spec: Option<&RouteSpec>, any_rule: bool| {
        let executor = executors
            .get(route.executor())
            .cloned()
            .expect("every route names a known executor");
        let cx = LayerContext::new(route, core);
        let mut stack: Option<Arc<dyn Service>> = None;
        let base = || -> Arc<dyn Service> {
            Arc::new(Base {
                executor: executor.clone(),
                rule: route.rule().to_owned(),
            })
        };
        let mut limiter = None;
        if let Some(spec) = spec {
            if let Some(limit) = &spec.limit {
                let budget = old
                    .and_then(|o| o.limiter_for(route, limit))
                    .unwrap_or_else(|| limit.limiter());
                stack = Some(limit.service(base(), budget.clone(), core));
                limiter = Some((*limit, budget));
            }
            if let Some(retry) = &spec.retry {
                stack = Some(retry.layer(stack.unwrap_or_else(base), &cx));
            }
            if let Some(after) = spec.timeout {
                let timeout = crate::layer::Timeout::new(after);
                stack = Some(timeout.layer(stack.unwrap_or_else(base), &cx));
            }
        }
        let own = code
            .route_layers
            .iter()
            .filter(|(rule, _)| !any_rule && rule == route.rule())
            .map(|(_, l)| l);
        let layers: Vec<&Arc<dyn Layer>> = code.layers.iter().chain(own).collect();
        for layer in layers.into_iter().rev() {
            stack = Some(layer.layer(stack.unwrap_or_else(base), &cx));
        }
        if spec.is_some_and(|s| s.on_thread) {
            // A name whose polls block its worker: run its async jobs on a thread.
            let inner = stack.unwrap_or_else(base);
            stack = Some(Arc::new(move |mut job: Job| {
                job.set_on_thread();
                inner.dispatch(job)
            }));
        }
        if let Some(priority) = spec.and_then(|s| s.priority) {
            // Outermost, so every layer (and the executor) sees the route's priority.
            let inner = stack.unwrap_or_else(base);
            stack = Some(Arc::new(move |mut job: Job| {
                if job.meta().explicit_priority().is_none() {
                    job.set_priority(priority);
                }
                inner.dispatch(job)
            }));
        }
        Compiled {
            route: route.clone(),
            any_rule,
            executor,
            service: stack,
            limiter,
        }
    };
    let mut routes = Vec::new();
    let policy: Arc<dyn Policy>;
    let observer;
    let mut file_positions = None;
    match (&code.policy, &config) {
        (Some(p), _) => {
            policy = p.clone();
            observer = Some(p.clone());
            // Every rule name that has layers, with every executor; then any other rule.
            let specs: Vec<&RouteSpec> = config
                .iter()
                .flat_map(|c| c.routes().iter().map(|r| r.route()).chain([c.defaults()]))
                .collect();
            let mut rules: Vec<&str> = specs.iter().map(|s| s.route.rule()).collect();
            rules.extend(code.route_layers.iter().map(|(r, _)| r.as_str()));
            rules.sort_unstable();
            rules.dedup();
            for name in executors.keys() {
                for rule in &rules {
                    let route = Route::new(name.clone(), *rule);
                    let spec = specs.iter().find(|s| s.route.rule() == *rule).copied();
                    routes.push(compile_one(&route, spec, false));
                }
                routes.push(compile_one(&Route::new(name.clone(), "*"), None, true));
            }
        }
        (None, Some(c)) => {
            policy = c.clone();
            // The file learns only when a route says `executor = "auto"`.
            observer = c.has_auto().then(|| c.clone() as Arc<dyn Policy>);
            let auto = c.routes().iter().filter_map(|r| r.auto_cpu());
            let blocking = c.routes().iter().filter_map(|r| r.auto_blocking());
            let specs = c.routes().iter().map(|r| r.route());
            for spec in specs.chain(auto).chain(blocking).chain([c.defaults()]) {
                routes.push(compile_one(&spec.route, Some(spec), false));
            }
            // Compiled in that order: the rules, the auto CPU routes, the auto blocking
            // routes, then the defaults.
            let mut next = c.routes().len();
            let mut place = |has: bool| {
                let at = next;
                next += usize::from(has);
                at
            };
            let auto_cpu = c.routes().iter().map(|r| place(r.auto_cpu().is_some()));
            let auto_cpu: Vec<usize> = auto_cpu.collect();
            let auto_blocking = c
                .routes()
                .iter()
                .map(|r| place(r.auto_blocking().is_some()));
            let auto_blocking: Vec<usize> = auto_blocking.collect();
            file_positions = Some(FilePositions {
                auto_cpu,
                auto_blocking,
                defaults: routes.len() - 1,
            });
        }
        (None, None) => {
            return Err(ConfigError::new(
                Kind::Build,
                &origin,
                "a supervisor needs a policy: a policy file, or a policy in code",
            ));
        }
    }
    Ok((
        Table {
            id: TABLE_IDS.fetch_add(1, Ordering::Relaxed),
            config,
            policy,
            observer,
            code_policy: code.policy.is_some(),
            file_positions,
            executors,
            routes,
            static_routes: StaticRoutes::new(),
        },
        built,
    ))
}

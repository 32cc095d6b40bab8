//! The observer: the outermost phase of every request, which writes its access-log line and
//! ends its span in one place when the answer is ready (pingora's logging phase). The steps
//! between do not write logs or spans; they fill in the request's [`Observed`] context (auth
//! the subject, dispatch the upstream and its latency), a request extension present only while
//! the access log or tracing is on.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue, Method};
use opentelemetry::Context;

use super::access_log::{AccessLog, Entry};
use super::trace::{self, Tracing};
use crate::gateway::types::{GwRequest, GwResponse};

/// The access log and the tracer, either or both off.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observer {
    access_log: Option<Arc<AccessLog>>,
    tracing: Option<Arc<Tracing>>,
}

impl Observer {
    /// An observer writing to `access_log` and `tracing` (each None when off).
    pub(crate) fn new(access_log: Option<Arc<AccessLog>>, tracing: Option<Arc<Tracing>>) -> Self {
        Observer {
            access_log,
            tracing,
        }
    }

    /// The access log, when on.
    pub(crate) fn access_log(&self) -> Option<Arc<AccessLog>> {
        self.access_log.clone()
    }

    /// The tracer, when on.
    pub(crate) fn tracing(&self) -> Option<Arc<Tracing>> {
        self.tracing.clone()
    }

    /// Starts observing a request as it arrives; None when there is nothing to write.
    pub(crate) fn begin(&self, headers: &HeaderMap, method: &Method) -> Option<Observation> {
        if self.access_log.is_none() && self.tracing.is_none() {
            return None;
        }
        let span = self
            .tracing
            .as_ref()
            .map(|t| t.request(headers, method.as_str()));
        Some(Observation {
            access_log: self.access_log.clone(),
            wall: SystemTime::now(),
            arrived: Instant::now(),
            context: Observed(Arc::new(Inner {
                span,
                learnt: Mutex::default(),
            })),
            routed: None,
        })
    }

    /// Writes out what the access log and the tracer hold (at the gateway's stop, so that the
    /// process does not end before them).
    pub(crate) fn flush(&self) {
        if let Some(log) = &self.access_log {
            log.flush(Duration::from_secs(2));
        }
        if let Some(t) = &self.tracing {
            t.flush();
        }
    }
}

/// One request under observation, from its arrival to its answer.
#[derive(Debug)]
pub(crate) struct Observation {
    access_log: Option<Arc<AccessLog>>,
    wall: SystemTime,
    arrived: Instant,
    context: Observed,
    /// The matched route and the request body's length, once routed.
    routed: Option<(Arc<str>, usize)>,
}

impl Observation {
    /// The request was routed: the steps get its context, the observer notes route and size.
    pub(crate) fn routed(&mut self, request: &mut GwRequest) {
        request.parts.extensions.insert(self.context.clone());
        self.routed = Some((request.route.clone(), request.body.len()));
    }

    /// The answer is ready: the request's span ends and its access-log line is written.
    pub(crate) fn finish(self, request_id: &HeaderValue, method: &Method, resp: &GwResponse) {
        let route = self.routed.as_ref().map(|(route, _)| &**route);
        let status = resp.status().as_u16();
        if let Some(span) = &self.context.0.span {
            trace::end_request(span, method.as_str(), route, status);
        }
        let Some(log) = &self.access_log else { return };
        let learnt = self.context.take();
        log.record(&Entry {
            time: self.wall,
            request_id: request_id.to_str().unwrap_or(""),
            method: method.as_str(),
            route,
            status,
            upstream: learnt.upstream.as_ref().map(|(name, _)| name.as_str()),
            upstream_ms: learnt.upstream.as_ref().map(|(_, t)| t.as_secs_f64() * 1e3),
            total_ms: self.arrived.elapsed().as_secs_f64() * 1e3,
            subject: learnt.subject.as_deref(),
            bytes_in: self.routed.as_ref().map_or(0, |(_, n)| *n),
            bytes_out: hyper::body::Body::size_hint(resp.body()).exact(),
        });
    }
}

/// A request's observed context: what the steps learn about it, set as they go, and its span
/// (a request extension while the access log or tracing is on).
#[derive(Debug, Clone)]
pub(crate) struct Observed(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    span: Option<Context>,
    learnt: Mutex<Learnt>,
}

/// What the steps learnt about a request.
#[derive(Debug, Default, Clone)]
pub(crate) struct Learnt {
    /// The verified subject.
    pub subject: Option<String>,
    /// The upstream's name and the call's length.
    pub upstream: Option<(String, Duration)>,
}

impl Observed {
    /// Sets the verified subject.
    pub(crate) fn subject(&self, sub: &str) {
        if let Ok(mut n) = self.0.learnt.lock() {
            n.subject = Some(sub.to_string());
        }
    }

    /// Sets the upstream call.
    pub(crate) fn upstream(&self, name: &str, took: Duration) {
        if let Ok(mut n) = self.0.learnt.lock() {
            n.upstream = Some((name.to_string(), took));
        }
    }

    /// The request's span, while tracing is on (the upstream call's span is its child).
    pub(crate) fn span(&self) -> Option<&Context> {
        self.0.span.as_ref()
    }

    /// What was set (taken out: the request is over).
    pub(crate) fn take(&self) -> Learnt {
        self.0
            .learnt
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }
}

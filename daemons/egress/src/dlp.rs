//! DLP as it applies to one request: the scanner with the manifest's own detectors, and the
//! manifest's policy (`egress.dlp`) for this host and path: which rules are let through here,
//! and whether a finding refuses (`mode: block`, the default) or is only logged (`mode: log`).

use crate::log::AccessLog;
use crate::proxy::Active;
use bottle_contract::egress::dlp::DlpMode;
use bottle_dlp::Finding;
use std::sync::Arc;

/// DLP for one request; cheap to clone into a body or a WebSocket relay.
#[derive(Clone)]
pub struct DlpScope {
    active: Arc<Active>,
    host: String,
    path: String,
    log: AccessLog,
}

impl DlpScope {
    /// The scope of a request to `host` at `path` (no query).
    pub fn new(active: Arc<Active>, host: &str, path: &str, log: AccessLog) -> Self {
        DlpScope {
            active,
            host: host.to_string(),
            path: path.to_string(),
            log,
        }
    }

    /// bottle's detectors with no routes and no exceptions: every finding refuses. For tests
    /// of what judges bytes outside a request.
    #[cfg(test)]
    pub(crate) fn defaults(log: AccessLog) -> Self {
        let table = crate::routes::RouteTable::parse(b"routes: []\n", &|_| None)
            .expect("an empty route table parses");
        let way_out = crate::upstream::WayOut::trusting_nothing();
        let active = Active::new(table, &way_out).expect("an empty table's clients");
        DlpScope::new(Arc::new(active), "", "/", log)
    }

    /// Whether the manifest lets findings of `rule` through here.
    fn skip(&self, rule: &str) -> bool {
        self.active.table.dlp.allows(rule, &self.host, &self.path)
    }

    /// [`bottle_dlp::Scanner::inspect`] with this request's exceptions.
    pub fn inspect(&self, hay: &[u8]) -> Option<Finding> {
        self.active
            .outbound
            .inspector(&|r| self.skip(r))
            .inspect(hay)
    }

    /// [`bottle_dlp::Scanner::inspect_after`] with this request's exceptions.
    pub fn inspect_after(&self, hay: &[u8], fresh: usize) -> Option<Finding> {
        self.active
            .outbound
            .inspector(&|r| self.skip(r))
            .inspect_after(hay, fresh)
    }

    /// [`bottle_dlp::Inspector::inspect_url`] with this request's exceptions.
    pub fn inspect_url(&self, path_and_query: &str) -> Option<Finding> {
        self.active
            .outbound
            .inspector(&|r| self.skip(r))
            .inspect_url(path_and_query)
    }

    /// [`bottle_dlp::Inspector::inspect_header`] with this request's exceptions.
    pub fn inspect_header(&self, name: &str, value: &[u8], injected: bool) -> Option<Finding> {
        self.active
            .outbound
            .inspector(&|r| self.skip(r))
            .inspect_header(name, value, injected)
    }

    /// [`bottle_dlp::Inspector::inspect_labels`] with this request's exceptions.
    pub fn inspect_labels(&self, labels: &str) -> Option<Finding> {
        self.active
            .outbound
            .inspector(&|r| self.skip(r))
            .inspect_labels(labels)
    }

    /// Whether what was found (`why`: "the URL carries jwt at bytes 3..90") refuses the
    /// request. Under `mode: log` it is logged (the rule and place, never the bytes) and the
    /// request goes on.
    pub fn refuses(&self, why: &str) -> bool {
        if self.active.table.dlp.mode == DlpMode::Log {
            self.log.event(
                "dlp",
                &format!("{why} (to {}); passed, egress.dlp.mode is log", self.host),
            );
            return false;
        }
        true
    }
}

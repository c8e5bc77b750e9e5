//! The ports the bundle's daemons listen on, inside the bundle; plugins publish them, the
//! daemons' defaults and `bottle verify` agree with them.

/// pipelock, the second proxy layer behind egress.
pub const PIPELOCK: u16 = 8888;
/// egress, the agent's proxy.
pub const EGRESS: u16 = 9099;
/// supervise, the MCP server the agent asks.
pub const SUPERVISE: u16 = 9100;
/// git-gate, the agent's git remote.
pub const GIT_GATE: u16 = 9418;

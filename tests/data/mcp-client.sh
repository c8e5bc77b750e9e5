# An MCP client in sh for an agent's side of a test: `post JSON` sends one JSON-RPC message to
# supervise (Streamable HTTP, plain curl) in an initialized session. Sourced at the top of
# a test's agent script (docker_e2e.rs, core/examples/approve-bench.rs).
set -u
U=http://supervise:9100/
A='Accept: application/json, text/event-stream'
J='Content-Type: application/json'
# The bearer the agent's MCP config carries (the run's hop token), as an MCP client sends it.
H="Authorization: $(sed -n 's/.*"Authorization": "\(.*\)".*/\1/p' "${BOTTLE_MCP_CONFIG:-/etc/bottle/mcp.json}")"
SID=$(curl -sS -m 30 -D - -o /dev/null -H "$H" -H "$J" -H "$A" -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"sh","version":"1"}}}' $U | tr -d '\r' | sed -n 's/^[Mm]cp-[Ss]ession-[Ii]d: //p')
post() { curl -sS -m 60 -H "$H" -H "$J" -H "$A" -H "Mcp-Session-Id: $SID" -d "$1" $U; }
post '{"jsonrpc":"2.0","method":"notifications/initialized"}' >/dev/null

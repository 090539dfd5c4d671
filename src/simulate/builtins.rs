//! The built-in scenarios, written in the same TOML a user would write (and parsed by the
//! same code, so they double as examples).

/// (name, TOML) of every built-in scenario.
pub const BUILTINS: [(&str, &str); 4] = [
    ("booktiful", BOOKTIFUL),
    ("heterogeneous", HETEROGENEOUS),
    ("hot-keys", HOT_KEYS),
    ("flapping", FLAPPING),
];

/// The TOML of built-in `name`.
pub fn get(name: &str) -> Option<&'static str> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

const BOOKTIFUL: &str = r#"
name = "booktiful"
description = """
The outage: two servers share the load; at t=60 s web-02 is taken out of rotation and
forgotten. web-01 alone gets 300 requests/s against a capacity of 200/s. Without
max_connections its backlog grows until memory runs out and it crashes, again and again;
with max_connections = 16 it holds and the excess waits in the queue or gets a quick 503."""
seed = 7
duration = "180s"

[settings]
max_queue = 200
queue_timeout = "2s"

[[servers]]
name = "web-01"
workers = 8
service = "exp:40ms"
max_connections = 16
memory_per_request_mb = 10
memory_limit_mb = 2000
restart_after = "20s"

[[servers]]
name = "web-02"
workers = 8
service = "exp:40ms"
max_connections = 16
memory_per_request_mb = 10
memory_limit_mb = 2000
restart_after = "20s"

[[traffic]]
at = "0s"
rate = 300

[[events]]
at = "60s"
server = "web-02"
action = "remove"
"#;

const HETEROGENEOUS: &str = r#"
name = "heterogeneous"
description = """
Three servers of different speed with equal weights, as often happens after a partial
hardware refresh: fast (20 ms), medium (50 ms) and old (200 ms). Algorithms that look at
load or response time keep the old one from drowning."""
seed = 11
duration = "120s"

[[servers]]
name = "fast"
service = "exp:20ms"
max_connections = 24
memory_per_request_mb = 8
memory_limit_mb = 1600

[[servers]]
name = "medium"
service = "exp:50ms"
max_connections = 24
memory_per_request_mb = 8
memory_limit_mb = 1600

[[servers]]
name = "old"
service = "exp:200ms"
max_connections = 24
memory_per_request_mb = 8
memory_limit_mb = 1600

[[traffic]]
at = "0s"
rate = 400
"#;

const HOT_KEYS: &str = r#"
name = "hot-keys"
description = """
Four equal servers and a skewed key distribution (Zipf over 500 clients): the hash
algorithms send every request of the hottest clients to the same server, which overloads
while the others idle. Set hash_balance_factor (e.g. 1.25) to bound it."""
seed = 13
duration = "120s"

[keys]
distribution = "zipf"
count = 500
exponent = 1.3

[[servers]]
name = "cache-1"
service = "exp:30ms"
max_connections = 32
memory_per_request_mb = 10
memory_limit_mb = 2500

[[servers]]
name = "cache-2"
service = "exp:30ms"
max_connections = 32
memory_per_request_mb = 10
memory_limit_mb = 2500

[[servers]]
name = "cache-3"
service = "exp:30ms"
max_connections = 32
memory_per_request_mb = 10
memory_limit_mb = 2500

[[servers]]
name = "cache-4"
service = "exp:30ms"
max_connections = 32
memory_per_request_mb = 10
memory_limit_mb = 2500

[[traffic]]
at = "0s"
rate = 800
"#;

const FLAPPING: &str = r#"
name = "flapping"
description = """
Three servers; app-3 crashes every 10 s and is back 3 s later, before the health checks
(every 2 s, fall 3) even notice. What it held is lost each time, and requests sent to it
while it is down need a retry on another server."""
seed = 17
duration = "120s"

[[servers]]
name = "app-1"
service = "exp:30ms"
max_connections = 24

[[servers]]
name = "app-2"
service = "exp:30ms"
max_connections = 24

[[servers]]
name = "app-3"
service = "exp:30ms"
max_connections = 24
restart_after = "3s"

[[traffic]]
at = "0s"
rate = 300

[[traffic]]
at = "60s"
rate = 450

[[events]]
at = "10s"
every = "10s"
server = "app-3"
action = "crash"
"#;

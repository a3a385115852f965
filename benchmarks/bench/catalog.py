"""Every scenario by name, with the figures its table rows show and their targets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .harness import Bench, Figure, Figures, Scenario
from .scenarios_chat import (
    scenario_durable,
    scenario_fanout,
    scenario_latency,
    scenario_web_fanout,
)
from .scenarios_cluster import (
    scenario_cluster_durable,
    scenario_cluster_fanout,
    scenario_cluster_latency,
)
from .scenarios_connect import scenario_connect
from .scenarios_failover import scenario_cluster_failover
from .scenarios_files import scenario_files
from .scenarios_history import scenario_history
from .scenarios_stall import (
    scenario_stall_flood,
    scenario_stall_forget,
    scenario_stall_history,
    scenario_stall_logins,
)

__all__ = ["GROUPS", "SCENARIOS"]

STALL_P99_MS = 50.0
"""The most an unrelated user's round trip may take at p99 while someone else loads the server."""
STALL_MAX_MS = 200.0
"""... and at worst."""
CLUSTER_LATENCY_P99_MS = 20.0
"""Issue 10: at 200 msg/s, sender and recipients on different servers, every recipient has
a message within this long at p99."""
CLUSTER_DURABLE = 5_000
"""Issue 10: acknowledged messages/s into PostgreSQL, with group commit."""
CLUSTER_FAILOVER_P99_S = 5.0
"""Issue 10: seconds from kill -9 of a server until its clients are on others, gap filled."""


def _stall(run: Callable[[Bench], Awaitable[Figures]], *load: Figure) -> Scenario:
    """A stall scenario: the probe's round trips first, then the load's own figures."""
    return Scenario(
        run,
        (
            Figure("p50_ms", "other user's time round trip p50 ms"),
            Figure("p99_ms", "other user's time round trip p99 ms", ("<=", STALL_P99_MS)),
            Figure("max_ms", "other user's time round trip max ms", ("<=", STALL_MAX_MS)),
            Figure("decoded_p99_ms", "... p99 ms as decoded by the generator"),
            Figure("idle_p99_ms", "... p99 ms before the load (idle server)"),
            *load,
            Figure("server_cores", "server CPU (cores busy)"),
            Figure("gen_cores", "generator CPU (cores busy)"),
            Figure("other_cores", "other CPU on the machine (cores)"),
            Figure("lost", "requests never answered", ("==", 0)),
        ),
    )


SCENARIOS: dict[str, Scenario] = {
    "fanout": Scenario(
        scenario_fanout,
        (
            Figure("server_us_per_delivery", "server CPU µs per delivery", ("<=", 1.7)),
            Figure("deliveries_per_s", "deliveries/s"),
            Figure("lost", "messages lost", ("==", 0)),
            Figure("gen_us_per_delivery", "generator CPU µs per delivery"),
            Figure("server_cores", "server CPU (cores busy)"),
            Figure("gen_cores", "generator CPU (cores busy)"),
            Figure("other_cores", "other CPU on the machine (cores)"),
        ),
    ),
    "web-fanout": Scenario(
        scenario_web_fanout,
        (
            Figure("server_us_per_delivery", "server CPU µs per delivery over WebSocket"),
            Figure("deliveries_per_s", "deliveries/s"),
            Figure("lost", "messages lost", ("==", 0)),
            Figure("gen_us_per_delivery", "generator CPU µs per delivery"),
            Figure("server_cores", "server CPU (cores busy)"),
            Figure("gen_cores", "generator CPU (cores busy)"),
            Figure("other_cores", "other CPU on the machine (cores)"),
        ),
    ),
    "latency": Scenario(
        scenario_latency,
        (
            Figure("p50_ms", "p50 ms until every recipient has it"),
            Figure("p99_ms", "p99 ms until every recipient has it", ("<=", 4.5)),
            Figure("max_ms", "max ms until every recipient has it"),
            Figure("first_p50_ms", "p50 ms until the first recipient has it"),
            Figure("decoded_p50_ms", "p50 ms until the generator decoded all 99"),
            Figure("decoded_p99_ms", "p99 ms until the generator decoded all 99"),
            Figure("server_us_per_delivery", "server CPU µs per delivery"),
            Figure("gen_us_per_delivery", "generator CPU µs per delivery"),
            Figure("other_cores", "other CPU on the machine (cores)"),
            Figure("lost", "messages lost", ("==", 0)),
        ),
    ),
    "connect": Scenario(
        scenario_connect,
        (
            Figure("clients_per_s", "mutual-TLS logins/s", (">=", 700)),
            Figure("rss_kib_per_conn", "server RSS growth KiB per connection", ("<=", 30)),
            Figure("rss_kib_per_conn_settled", "... once join notices drained (KiB)"),
            Figure("first_decile_per_s", "logins/s, first 10 %"),
            Figure("last_decile_per_s", "logins/s, last 10 %"),
            Figure("server_ms_per_conn", "server CPU ms per login"),
            Figure("gen_ms_per_conn", "generator CPU ms per login"),
            Figure("peak_threads", "server threads at peak"),
            Figure("peak_fds", "server fds at peak"),
            Figure("notice_mib_received", "join notices received by the clients (MiB)"),
            Figure("tls_handshakes_per_s", "mutual-TLS handshakes/s without login"),
            Figure("tls_server_ms_per_handshake", "... server CPU ms per handshake"),
            Figure("tls_gen_ms_per_handshake", "... generator CPU ms per handshake"),
            Figure("tls_rss_kib_per_conn", "... server RSS growth KiB per connection"),
            Figure("password_logins_per_s", "password logins/s (new accounts)"),
            Figure("other_cores", "other CPU on the machine (cores)"),
            Figure("lost", "clients that failed to log in", ("==", 0)),
        ),
        certificates=5000,
    ),
    "history": Scenario(
        scenario_history,
        (
            Figure("p50_ms", "p50 ms for the latest 500 of 1,200", ("<=", 4.0)),
            Figure("p90_ms", "p90 ms"),
            Figure("server_ms_per_fetch", "server CPU ms per fetch"),
            Figure("gen_ms_per_fetch", "generator CPU ms per fetch"),
            Figure("gen_decode_ms", "generator: Decoder time for one answer (ms)"),
            Figure("other_cores", "other CPU on the machine (cores)"),
            Figure("lost", "short answers", ("==", 0)),
        ),
    ),
    "durable": Scenario(
        scenario_durable,
        (
            Figure("msgs_per_s_normal", "acked msgs/s, --durability normal", (">=", 20_000)),
            Figure("msgs_per_s_full", "acked msgs/s, --durability full"),
            Figure("server_us_per_msg_normal", "server CPU µs per message (normal)"),
            Figure("gen_us_per_msg_normal", "generator CPU µs per message (normal)"),
            Figure("server_cores_normal", "server CPU (cores busy, normal)"),
            Figure("other_cores_normal", "other CPU on the machine (cores, normal)"),
            Figure("lost", "messages never acknowledged", ("==", 0)),
        ),
    ),
    "files": Scenario(
        scenario_files,
        (
            Figure("mib_per_s", "MiB/s, accept to file_result", (">=", 100)),
            Figure("chat_p99_ms", "others' chat p99 ms", ("<=", 10)),
            Figure("chat_p50_ms", "others' chat p50 ms"),
            Figure("chat_decoded_p99_ms", "others' chat p99 ms as decoded by the generator"),
            Figure("chat_p99_at_recipient_ms", "chat p99 ms at the file's recipient"),
            Figure("server_cores", "server CPU (cores busy)"),
            Figure("gen_cores", "generator CPU (cores busy)"),
            Figure("other_cores", "other CPU on the machine (cores)"),
            Figure("lost", "chat lost + failed transfer", ("==", 0)),
        ),
    ),
    "stall-forget": _stall(
        scenario_stall_forget,
        Figure("forget_ms", "forget: request to forgotten (ms)"),
        Figure("erased", "messages erased"),
    ),
    "stall-flood": _stall(
        scenario_stall_flood,
        Figure("stored_per_s", "2 KB messages stored/s"),
        Figure("rate_limited", "messages refused rate_limited", ("==", 0)),
        Figure("refused_other", "messages refused otherwise"),
        Figure("ack_p99_ms", "senders' p99 ms to the echo (decoded)"),
    ),
    "stall-history": _stall(
        scenario_stall_history,
        Figure("requests", "history requests never read"),
    ),
    "stall-logins": _stall(
        scenario_stall_logins,
        Figure("attempts", "wrong-password login attempts"),
        Figure("attempts_per_s", "attempts/s"),
        Figure("bad_password", "answered bad_password"),
        Figure("refused", "connections refused or closed unanswered"),
        Figure("throttled", "answered with another error (throttled)"),
        Figure("timeouts", "unanswered within 15 s"),
    ),
    "cluster-fanout": Scenario(
        scenario_cluster_fanout,
        (
            Figure("server_us_per_delivery", "CPU µs per delivery, 3 servers + PG + Redis"),
            Figure("nodes_us_per_delivery", "... of which the 3 securechat servers"),
            Figure("postgres_us_per_delivery", "... of which PostgreSQL"),
            Figure("redis_us_per_delivery", "... of which Redis"),
            Figure("deliveries_per_s", "deliveries/s"),
            Figure("lost", "messages lost", ("==", 0)),
            Figure("misordered", "copies shown out of number order", ("==", 0)),
            Figure("gen_us_per_delivery", "generator CPU µs per delivery"),
            Figure("server_cores", "server side CPU (cores busy)"),
            Figure("gen_cores", "generator CPU (cores busy)"),
            Figure("other_cores", "other CPU on the machine (cores)"),
        ),
    ),
    "cluster-latency": Scenario(
        scenario_cluster_latency,
        (
            Figure("p50_ms", "p50 ms until every other-server recipient has it"),
            Figure(
                "p99_ms",
                "p99 ms until every other-server recipient has it",
                ("<=", CLUSTER_LATENCY_P99_MS),
            ),
            Figure("max_ms", "max ms until every other-server recipient has it"),
            Figure("first_p50_ms", "p50 ms until the first recipient has it"),
            Figure("first_p99_ms", "p99 ms until the first recipient has it"),
            Figure("ack_p50_ms", "p50 ms until the sender's echo (committed)"),
            Figure("ack_p99_ms", "p99 ms until the sender's echo (committed)"),
            Figure("decoded_p99_ms", "p99 ms until the generator decoded all"),
            Figure("server_us_per_delivery", "CPU µs per delivery, 3 servers + PG + Redis"),
            Figure("server_cores", "server side CPU (cores busy)"),
            Figure("other_cores", "other CPU on the machine (cores)"),
            Figure("lost", "messages lost", ("==", 0)),
        ),
    ),
    "cluster-durable": Scenario(
        scenario_cluster_durable,
        (
            Figure(
                "msgs_per_s", "acked msgs/s into PostgreSQL, 3 servers", (">=", CLUSTER_DURABLE)
            ),
            Figure("msgs_per_commit", "messages per PostgreSQL commit"),
            Figure("server_us_per_msg", "CPU µs per message, 3 servers + PG + Redis"),
            Figure("nodes_us_per_msg", "... of which the 3 securechat servers"),
            Figure("postgres_us_per_msg", "... of which PostgreSQL"),
            Figure("redis_us_per_msg", "... of which Redis"),
            Figure("server_cores", "server side CPU (cores busy)"),
            Figure("other_cores", "other CPU on the machine (cores)"),
            Figure("lost", "messages never acknowledged", ("==", 0)),
        ),
    ),
    "cluster-failover": Scenario(
        scenario_cluster_failover,
        (
            Figure("p50_s", "s from kill -9 to reconnected with gap filled, p50"),
            Figure("p99_s", "... p99", ("<=", CLUSTER_FAILOVER_P99_S)),
            Figure("max_s", "... max"),
            Figure("reconnect_p99_s", "... p99 after the client's reconnect wait"),
            Figure("failed_over", "clients of the killed server"),
            Figure("resent", "unacknowledged messages re-sent"),
            Figure("server_cores", "server side CPU (cores busy)"),
            Figure("other_cores", "other CPU on the machine (cores)"),
            Figure("lost", "acked lost, stored twice, or views left with a hole", ("==", 0)),
        ),
    ),
}

GROUPS: dict[str, tuple[str, ...]] = {
    "stall": tuple(name for name in SCENARIOS if name.startswith("stall-")),
    "cluster": tuple(name for name in SCENARIOS if name.startswith("cluster-")),
}
"""Names on the command line that stand for several scenarios."""

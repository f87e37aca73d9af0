"""The mistakes a new user makes first get one line that says what to do, not a traceback; and the
client commands find the daemon through the same config the daemon reads."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest
from kafka import KafkaAdminClient

from learnd.adapters.kafka.broker import EmbeddedBroker, free_port

from .test_cli import LEARND

pytestmark = pytest.mark.e2e

# No config file from the environment of whoever runs the tests, and quiet logs.
BASE_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("LEARND_")},
    "LEARND_LOG__LEVEL": "WARNING",
}


def learnd(*args, env=None, timeout=60, **kw):
    return subprocess.run(
        [LEARND, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**BASE_ENV, **(env or {})},
        **kw,
    )


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def config_file(tmp_path, **serving) -> str:
    lines = ["[schema]", "n_features = 3", "[serving]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in serving.items()]
    lines += ["[metrics]", "enabled = false", "[checkpoint]", f'dir = "{tmp_path / "state"}"']
    path = tmp_path / "learnd.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("command", ["predict", "health", "versions", "rollback"])
def test_client_commands_without_a_daemon_say_where_they_looked(command):
    port = free_port()
    extra = ['{"x1": 1}'] if command == "predict" else ["2"] if command == "rollback" else []
    r = learnd(command, *extra, env={"LEARND_SERVING__TCP_PORT": str(port)})
    assert r.returncode == 1
    line = one_line(r.stderr)
    assert line.startswith(f"learnd {command}: nothing listens on 127.0.0.1:{port}")
    assert "is `learnd run` up?" in line


def test_a_missing_unix_socket_is_named():
    r = learnd("predict", "--unix", "/nonexistent/learnd.sock", "[1, 2, 3]")
    assert r.returncode == 1
    assert one_line(r.stderr).startswith("learnd predict: no socket at /nonexistent/learnd.sock")


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:http", "host:99999"])
def test_a_malformed_address_is_a_usage_error(address):
    r = learnd("predict", "--tcp", address, "[1, 2, 3]")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "argument --tcp: takes HOST:PORT" in r.stderr.strip().splitlines()[-1]


@pytest.fixture
def serving_daemon(tmp_path):
    """`learnd run` with no broker (it serves its first model and retries the broker), on a
    port and with a token that only its config file names."""
    port = free_port()
    cfg = config_file(tmp_path, tcp_port=port, token="s3cret-token")
    env = {**BASE_ENV, "LEARND_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    proc = subprocess.Popen([LEARND, "run", "-c", cfg], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "learnd run never served"
            time.sleep(0.2)
    yield cfg, port
    proc.kill()  # a daemon killed leaves nothing behind (tests/e2e/test_cli.py); quicker
    proc.wait(30)


def test_client_commands_read_address_and_token_from_the_daemons_config(serving_daemon):
    cfg, port = serving_daemon
    health = learnd("health", "-c", cfg)  # not ready (no broker), but answering
    answer = json.loads(health.stdout)
    assert answer["ok"] and answer["alive"] and answer["status"] == "starting", health.stderr
    assert health.returncode == 1
    versions = learnd("versions", env={"LEARND_CONFIG": cfg})
    assert versions.returncode == 0 and json.loads(versions.stdout)["current"] == 1
    predict = learnd(
        "predict",
        "[1, 2, 3]",
        env={"LEARND_SERVING__TCP_PORT": str(port), "LEARND_SERVING__TOKEN": "s3cret-token"},
    )
    assert predict.returncode == 0 and json.loads(predict.stdout)["version"] == 1
    unpin = learnd("rollback", "--unpin", "-c", cfg)
    assert unpin.returncode == 0 and json.loads(unpin.stdout)["ok"]
    # --set beats the file: a wrong token from the command line is refused by the daemon
    wrong = learnd("versions", "-c", cfg, "--set", "serving.token=wrong")
    assert wrong.returncode == 1 and json.loads(wrong.stdout)["error"] == "unauthorized"


@pytest.mark.parametrize("which", ["serving", "metrics"])
def test_a_port_in_use_stops_start_up_with_one_line(tmp_path, which):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {
            "LEARND_SCHEMA__N_FEATURES": "3",
            "LEARND_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "LEARND_CHECKPOINT__DIR": str(tmp_path / "state"),
            "LEARND_SERVING__TCP_PORT": str(port if which == "serving" else free_port()),
            "LEARND_METRICS__PORT": str(port if which == "metrics" else free_port()),
            "LEARND_LOG__LEVEL": "ERROR",
        }
        if which == "metrics":  # quicker: no child processes to start and stop
            env |= {"LEARND_SERVING__PROCESSES": "0", "LEARND_KAFKA__CONSUMER_PROCESS": "false"}
        r = learnd("run", env=env, timeout=120)
    field = "serving.tcp_port" if which == "serving" else "metrics.port"
    assert r.returncode == 2
    assert one_line(r.stderr) == (
        f"learnd: {field}: 127.0.0.1:{port} is already in use (another learnd, or another "
        f"program): stop it or choose another port ({field}, "
        f"LEARND_{field.upper().replace('.', '__')})"
    )


def test_a_unix_socket_a_live_daemon_listens_on_is_not_taken_over(tmp_path):
    path = tmp_path / "learnd.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        env = {
            "LEARND_SCHEMA__N_FEATURES": "3",
            "LEARND_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "LEARND_CHECKPOINT__DIR": str(tmp_path / "state"),
            "LEARND_SERVING__TCP_PORT": "null",
            "LEARND_SERVING__UNIX_PATH": str(path),
            "LEARND_METRICS__ENABLED": "false",
            "LEARND_SERVING__PROCESSES": "0",
            "LEARND_KAFKA__CONSUMER_PROCESS": "false",
            "LEARND_LOG__LEVEL": "ERROR",
        }
        r = learnd("run", env=env, timeout=120)
        assert r.returncode == 2
        assert one_line(r.stderr).startswith(
            f"learnd: serving.unix_path: {path} is in use by a running daemon"
        )
        assert path.exists()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = EmbeddedBroker(log_path=tmp_path_factory.mktemp("b") / "tansu.log").start()
    yield b.bootstrap
    b.stop()


def topics_env(tmp_path, bootstrap, name):
    return {
        "LEARND_SCHEMA__N_FEATURES": "3",
        "LEARND_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "LEARND_KAFKA__TOPIC": name,
        "LEARND_KAFKA__DEAD_LETTER_TOPIC": f"{name}-dlq",
        "LEARND_KAFKA__GROUP_ID": name,
        "LEARND_CHECKPOINT__DIR": str(tmp_path / "state"),
        "LEARND_SERVING__TCP_PORT": str(free_port()),
        "LEARND_METRICS__ENABLED": "false",
    }


def partitions(bootstrap, names):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        present = set(admin.list_topics())
        found = {n: 0 for n in names}
        for t in admin.describe_topics([n for n in names if n in present]):
            found[t["name"]] = len(t["partitions"])
        return found
    finally:
        admin.close()


def test_a_missing_topic_stops_start_up_with_what_to_do(tmp_path, broker):
    name = f"missing-{time.monotonic_ns()}"
    r = learnd("run", env=topics_env(tmp_path, broker, name), timeout=60)
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert line == (
        f"learnd: kafka.topic '{name}' and kafka.dead_letter_topic '{name}-dlq' do not exist on "
        f"{broker}: create with `learnd topics create --partitions N` (same config), or start "
        "with `learnd run --create-topics`"
    )
    assert partitions(broker, [name]) == {name: 0}, "asking created nothing"


def test_topics_create_makes_the_events_and_dead_letter_topics(tmp_path, broker):
    name = f"created-{time.monotonic_ns()}"
    env = topics_env(tmp_path, broker, name)
    r = learnd("topics", "create", "--partitions", "3", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"learnd topics: {name}: created (3 partitions, replication 1)",
        f"learnd topics: {name}-dlq: created (1 partition, replication 1)",
    ]
    assert partitions(broker, [name, f"{name}-dlq"]) == {name: 3, f"{name}-dlq": 1}
    again = learnd("topics", "create", "--partitions", "3", env=env)
    assert again.stdout.splitlines() == [
        f"learnd topics: {name}: exists (3 partitions)",
        f"learnd topics: {name}-dlq: exists (1 partition)",
    ]


def test_run_create_topics_creates_them_then_runs(tmp_path, broker):
    name = f"run-created-{time.monotonic_ns()}"
    env = {**BASE_ENV, **topics_env(tmp_path, broker, name)}
    proc = subprocess.Popen(
        [LEARND, "run", "--create-topics", "--partitions", "2"], env=env, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while partitions(broker, [name, f"{name}-dlq"]) != {name: 2, f"{name}-dlq": 1}:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "topics never created"
            time.sleep(0.2)
        while learnd("health", env=env).returncode != 0:  # then it runs, and becomes ready
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]


def test_run_without_any_config_says_a_config_file_is_missing():
    r = learnd("run")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [
        "learnd: invalid config:",
        "  schema: required",
        "(no config file was given: --config FILE or LEARND_CONFIG)",
    ]


def test_a_demo_without_its_broker_binary_says_so(tmp_path):
    r = learnd(
        "demo",
        "--duration",
        "1",
        "--state-dir",
        str(tmp_path / "demo"),
        env={"LEARND_TANSU_BIN": str(tmp_path / "no-tansu")},
    )
    assert r.returncode == 2
    assert (
        one_line(r.stderr)
        == f"learnd: LEARND_TANSU_BIN {tmp_path / 'no-tansu'}: no executable there"
    )

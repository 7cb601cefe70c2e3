"""The example GitLab pipeline (examples/gitlab/.gitlab-ci.yml), run for real by gitlab-ci-local on a
shell executor against a live `fm up`: a good commit is promoted and its pipeline passes, a bad commit
is rolled back and its pipeline fails, and the manual jobs promote or abort a waiting canary. The API
token reaches the jobs only as a variable (the runner's copy of the config has an empty state
directory), and no job log shows it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fridaymorning.demo.run import BackgroundTraffic
from fridaymorning.testing import EVENT_DEADLINE_S, QUICK_ANALYSIS, FmUpProcess, wait_for_sync

pytestmark = [pytest.mark.gitlab, pytest.mark.haproxy, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "gitlab"
TOOLS = REPO_ROOT / "tools" / "gitlab-ci-local"
GITLAB_CI_LOCAL = TOOLS / "node_modules" / ".bin" / "gitlab-ci-local"
VERSION = "4.73.0"
INSTALL_ADVICE = (
    "gitlab-ci-local is not installed: run `make test` (it runs `npm ci` in tools/gitlab-ci-local), or "
    "`npm ci --prefix tools/gitlab-ci-local`; it needs Node.js >= 20.19 with npm, and rsync "
    "(sudo apt-get install -y rsync)"
)
# The files of the example service's repository.
EXAMPLE_FILES = (".gitlab-ci.yml", "app.py", "test_app.py")
# Quick steps, as in the other integration tests: a good release is promoted within seconds when idle.
QUICK_STEPS = [
    {"weight": 20, "min_duration_s": 3, "max_duration_s": 300, "min_requests": 50},
    {"weight": 50, "min_duration_s": 3, "max_duration_s": 300, "min_requests": 50},
]
# A whole pipeline: jobs of a few seconds each plus a rollout, on a busy machine.
PIPELINE_TIMEOUT_S = 3 * EVENT_DEADLINE_S


@pytest.fixture(scope="session")
def gitlab_ci_local() -> Path:
    """The pinned gitlab-ci-local; fails (never skips) with install advice when it or rsync is missing."""
    if not GITLAB_CI_LOCAL.exists() or shutil.which("rsync") is None:
        pytest.fail(INSTALL_ADVICE)
    found = subprocess.run([GITLAB_CI_LOCAL, "--version"], capture_output=True, text=True, check=False)
    if found.stdout.strip() != VERSION:
        pytest.fail(f"gitlab-ci-local {VERSION} is needed, found {found.stdout.strip()!r}: {INSTALL_ADVICE}")
    return GITLAB_CI_LOCAL


@dataclass
class Pipeline:
    """A git repository of the example service, run by gitlab-ci-local as a shell runner would."""

    binary: Path
    repo: Path
    home: Path  # the runner's home: its .gitlab-ci-local/variables.yml holds the token
    variables: dict[str, str]
    env: dict[str, str]

    def commit(self, message: str, failure_rate: float | None = None) -> str:
        """Commit the service (with FAILURE_RATE set, if given); the commit's short SHA."""
        if failure_rate is not None:
            app = self.repo / "app.py"
            text = app.read_text()
            assert "FAILURE_RATE = 0.0\n" in text
            app.write_text(text.replace("FAILURE_RATE = 0.0\n", f"FAILURE_RATE = {failure_rate}\n"))
        else:
            (self.repo / "CHANGES").write_text(message + "\n")  # a change that breaks nothing
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "--short=8", "HEAD")

    def git(self, *args: str) -> str:
        identity = ["-c", "user.name=ci", "-c", "user.email=ci@example.invalid"]
        done = subprocess.run(
            ["git", *identity, *args], cwd=self.repo, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    def argv(self, *jobs: str) -> list[str]:
        argv = [str(self.binary), "--shell-executor-no-image", "--no-color"]
        argv += ["--home", str(self.home)]
        for name, value in self.variables.items():
            argv += ["--variable", f"{name}={value}"]
        return [*argv, *jobs]

    def run(self, *jobs: str, checkout: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run the given jobs (the whole pipeline when none) to their end, in the repository or in
        another `checkout` of it (as a runner gives each job a build directory of its own)."""
        return subprocess.run(
            self.argv(*jobs),
            cwd=checkout or self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=PIPELINE_TIMEOUT_S,
            check=False,
        )

    def start(self, *jobs: str, log: Path) -> subprocess.Popen[str]:
        """Start the given jobs in the background, their output in `log`."""
        with log.open("w") as stream:
            return subprocess.Popen(
                self.argv(*jobs),
                cwd=self.repo,
                env=self.env,
                stdout=stream,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def clone(self, directory: Path) -> Path:
        """Another checkout of the repository at its latest commit."""
        subprocess.run(
            ["git", "clone", "-q", str(self.repo), str(directory)], check=True, capture_output=True
        )
        return directory

    def job_logs(self) -> str:
        """Every job log gitlab-ci-local kept, in the repository and in its other checkouts."""
        logs = sorted(self.repo.parent.glob("*/.gitlab-ci-local/output/*.log"))
        return "\n".join(path.read_text(errors="replace") for path in logs)


def fm_wrapper(directory: Path) -> Path:
    """A directory with an `fm` program that runs this environment's fridaymorning, for the jobs' PATH."""
    directory.mkdir()
    program = directory / "fm"
    program.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fridaymorning "$@"\n')
    program.chmod(0o755)
    return directory


def host_config(path: Path, stable: str, releases: Path, free_port: Callable[[], int], haproxy: str) -> None:
    """The example's fridaymorning.yaml on free loopback ports, with releases under `releases` and quick
    steps; the stable version is the first commit's release."""
    config = yaml.safe_load((EXAMPLE / "fridaymorning.yaml").read_text())
    config["state_dir"] = str(path.parent / "state")
    config["haproxy"]["binary"] = haproxy
    config["collector"] = {"listen": f"127.0.0.1:{free_port()}", "lateness_s": 0.5}
    config["api"]["listen"] = f"127.0.0.1:{free_port()}"
    service = config["services"][0]
    service["frontend"] = f"127.0.0.1:{free_port()}"
    service["stable"] = stable
    command = service["platform"]["command"]
    assert command[1] == "/srv/shop/releases/{version}/app.py", command
    command[1] = str(releases / "{version}" / "app.py")
    service["platform"]["replicas"] = 1
    service["rollout"] = {"steps": QUICK_STEPS}
    service["analysis"] = dict(QUICK_ANALYSIS)
    path.write_text(yaml.safe_dump(config))


@pytest.fixture
def deploy_host(
    tmp_path: Path, gitlab_ci_local: Path, free_port: Callable[[], int], haproxy_binary: str
) -> Iterator[tuple[Pipeline, FmUpProcess]]:
    """The example repository with its first commit built, `fm up` serving that release, and the runner's
    view: its own copy of the config (with a state directory of its own, so no token file) and the token
    as a variable in its gitlab-ci-local home (mode 600), as a masked project variable would be."""
    repo = tmp_path / "shop"
    repo.mkdir()
    for name in EXAMPLE_FILES:
        shutil.copy(EXAMPLE / name, repo / name)
    (repo / ".gitignore").write_text(".gitlab-ci-local*/\n__pycache__/\n")
    releases = tmp_path / "releases"
    host = tmp_path / "host"
    host.mkdir()
    runner = tmp_path / "runner"
    runner.mkdir()
    env = dict(os.environ)
    env["PATH"] = f"{fm_wrapper(tmp_path / 'bin')}{os.pathsep}{env['PATH']}"
    variables_file = runner / ".gitlab-ci-local" / "variables.yml"
    variables_file.parent.mkdir(mode=0o700)
    pipeline = Pipeline(
        gitlab_ci_local,
        repo,
        runner,
        {"FM_CONFIG": str(runner / "fridaymorning.yaml"), "FM_RELEASES": str(releases)},
        env,
    )
    pipeline.git("init", "-q", "-b", "main")
    first = pipeline.commit("the first release")
    built = pipeline.run("build")
    assert built.returncode == 0, built.stdout + built.stderr
    assert (releases / first / "app.py").exists()

    host_config(host / "fridaymorning.yaml", first, releases, free_port, haproxy_binary)
    runner_config = yaml.safe_load((host / "fridaymorning.yaml").read_text())
    runner_config["state_dir"] = str(runner / "state")
    (runner / "fridaymorning.yaml").write_text(yaml.safe_dump(runner_config))
    up = FmUpProcess(host / "fridaymorning.yaml", timeout_s=EVENT_DEADLINE_S)
    try:
        token = (host / "state" / "api-token").read_text().strip()
        variables_file.write_text(yaml.safe_dump({"global": {"FM_API_TOKEN": token}}))
        variables_file.chmod(stat.S_IRUSR | stat.S_IWUSR)
        yield pipeline, up
        logs = pipeline.job_logs()
        assert "$ fm " in logs and token not in logs
    finally:
        up.stop()


def stable_of(up: FmUpProcess) -> Any:
    return httpx.get(f"{up.api}/status", timeout=30).json()["services"][0]["stable"]


def running_version(up: FmUpProcess) -> Any:
    rollout = httpx.get(f"{up.api}/status", timeout=30).json()["services"][0]["rollout"]
    return rollout and rollout["version"]


def test_a_good_commit_is_promoted_and_a_bad_one_fails_its_pipeline(
    deploy_host: tuple[Pipeline, FmUpProcess],
) -> None:
    """The whole pipeline passes for a good commit (promoted: fm's stable version is its short SHA) and
    fails for one that answers half its requests with 500 (rolled back: exit 3, the stable version
    stays); the canary job's log shows the rollout's events and progress lines, and the explanation."""
    pipeline, up = deploy_host
    traffic = BackgroundTraffic(up.frontend, rate=40)
    traffic.start()
    try:
        good = pipeline.commit("a good change")
        passed = pipeline.run()
        output = passed.stdout + passed.stderr
        assert passed.returncode == 0, output
        assert stable_of(up) == good
        for seen in ("PASS  unit-tests", "PASS  build", "PASS  canary", "judge: pass", "promoted at 100%"):
            assert seen in output, seen

        bad = pipeline.commit("a change that fails half the requests", failure_rate=0.5)
        failed = pipeline.run()
        output = failed.stdout + failed.stderr
    finally:
        served = traffic.stop()
    assert failed.returncode == 1, output
    assert "FAIL 3" in output and "rolled_back" in output and "error_rate" in output
    assert f"rollout 2: shop {good} → {bad}, rolled_back" in output  # the explanation's heading
    assert stable_of(up) == good
    assert served[good]["requests"] > 0 and served[bad]["errors"] > 0, served
    # Only the bad release failed requests: none of the others, nor HAProxy itself ("unknown").
    assert all(counts["errors"] == 0 for version, counts in served.items() if version != bad), served
    assert "Traceback" not in output


def test_the_manual_jobs_abort_and_promote_a_waiting_canary(
    deploy_host: tuple[Pipeline, FmUpProcess], tmp_path: Path
) -> None:
    """Without traffic a canary waits for evidence; the manual `abort` job ends it (the canary job fails
    with exit 4), and for the next commit the manual `promote` job promotes it (the canary job passes)."""
    pipeline, up = deploy_host
    for manual_job, canary_passes in (("abort", False), ("promote", True)):
        version = pipeline.commit(f"a release to {manual_job}")
        built = pipeline.run("build")
        assert built.returncode == 0, built.stdout
        log = tmp_path / f"canary-{manual_job}.log"
        canary = pipeline.start("canary", log=log)
        try:
            wait_for_sync(lambda: running_version(up) == version, f"the rollout of {version}")  # noqa: B023
            checkout = pipeline.clone(tmp_path / f"checkout-{manual_job}")
            manual = pipeline.run(manual_job, checkout=checkout)
            # A manual job may fail without failing the pipeline (allow_failure): read its verdict.
            assert f"PASS  {manual_job}" in manual.stdout, manual.stdout + manual.stderr
            canary.wait(timeout=PIPELINE_TIMEOUT_S)
        finally:
            if canary.poll() is None:
                canary.kill()
        output = log.read_text()
        assert (canary.returncode == 0) is canary_passes, output
        assert ("PASS  canary" if canary_passes else "FAIL 4") in output, output
    assert stable_of(up) == version

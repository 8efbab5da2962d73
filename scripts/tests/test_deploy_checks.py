"""Unit tests of the deployment checks and of k8s_spec.py, run from the repository's root:
python -m unittest discover -s scripts/tests -t scripts (scripts/validate-deploy.sh does)."""

import contextlib
import io
import os
import tempfile
import textwrap
import unittest
from pathlib import Path

import k8s_spec
from deploy_checks import common, compose, config_keys, dockerfile


def quietly(check, *args):
    """(result, printed lines) of a check, without counting it in the run's tally."""
    before = dict(common.TALLY)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = check(*args)
    common.TALLY.update(before)
    return result, out.getvalue().splitlines()


def dockerfile_with(replacements):
    """The repository's Dockerfile with each (old, new) replaced, in a temporary file."""
    text = Path("Dockerfile").read_text(encoding="utf-8")
    for old, new in replacements:
        if old not in text:
            raise AssertionError(f"the Dockerfile no longer holds {old!r}")
        text = text.replace(old, new)
    f = tempfile.NamedTemporaryFile("w", suffix=".Dockerfile", delete=False, encoding="utf-8")
    f.write(text)
    f.close()
    return f.name


class TempFiles(unittest.TestCase):
    def temporary(self, path):
        """PATH, removed when the test ends."""
        self.addCleanup(os.unlink, path)
        return path

    def write_temporary(self, text, suffix):
        with tempfile.NamedTemporaryFile("w", suffix=suffix, delete=False, encoding="utf-8") as f:
            f.write(text)
        return self.temporary(f.name)


class DockerignoreMatching(unittest.TestCase):
    PATTERNS = ["target/", "!target/image-bin/", "**/tests/", "**/*.log", ".git/"]

    def test_a_directory_pattern_excludes_what_is_below_it(self):
        self.assertTrue(dockerfile.ignored("target/release/order-api", self.PATTERNS))
        self.assertTrue(dockerfile.ignored(".git/HEAD", self.PATTERNS))

    def test_a_later_exception_lets_a_subdirectory_through(self):
        self.assertFalse(dockerfile.ignored("target/image-bin/order-api", self.PATTERNS))
        self.assertTrue(dockerfile.ignored("target/image-binaries/x", self.PATTERNS))

    def test_double_star_matches_at_any_depth_and_at_the_root(self):
        self.assertTrue(dockerfile.ignored("order-core/tests/storage.rs", self.PATTERNS))
        self.assertTrue(dockerfile.ignored("tests/browser/docs.test.mjs", self.PATTERNS))
        self.assertTrue(dockerfile.ignored("a/b/c.log", self.PATTERNS))
        self.assertFalse(dockerfile.ignored("order-core/src/lib.rs", self.PATTERNS))


class DockerfileInstructions(TempFiles):
    def test_continuations_are_joined_and_comments_dropped(self):
        path = self.write_temporary(
            textwrap.dedent("""\
            # a comment
            FROM debian AS base
            RUN apt-get update \\
                # a comment inside the continuation
                && apt-get install -y curl
            user 10001
            """),
            ".Dockerfile",
        )
        self.assertEqual(
            dockerfile.dockerfile_instructions(path),
            [
                ("FROM", "debian AS base"),
                ("RUN", "apt-get update && apt-get install -y curl"),
                ("USER", "10001"),
            ],
        )


class DockerfileCheck(TempFiles):
    def test_the_repository_dockerfile_passes(self):
        ok, lines = quietly(dockerfile.check_dockerfile)
        self.assertTrue(ok, lines)

    def test_a_root_user_fails(self):
        path = self.temporary(dockerfile_with([("USER 10001:10001", "USER 0:0")]))
        ok, lines = quietly(dockerfile.check_dockerfile, path)
        self.assertFalse(ok)
        self.assertIn("USER 10001 expected", "\n".join(lines))

    def test_every_members_sources_are_copied(self):
        path = self.temporary(dockerfile_with([("COPY order-testkit/src order-testkit/src\n", "")]))
        ok, lines = quietly(dockerfile.check_dockerfile, path)
        self.assertFalse(ok)
        self.assertIn("order-testkit/src is not copied", "\n".join(lines))

    def test_the_runtime_base_target_is_required(self):
        path = self.temporary(dockerfile_with([("AS runtime-base", "AS base"), ("FROM runtime-base", "FROM base")]))
        ok, lines = quietly(dockerfile.check_dockerfile, path)
        self.assertFalse(ok)
        self.assertIn("the last stage must be FROM runtime-base", "\n".join(lines))

    def test_the_default_target_takes_its_binaries_from_the_builder(self):
        path = self.temporary(
            dockerfile_with([("COPY --from=builder /out/order-api", "COPY --from=elsewhere /out/order-api")])
        )
        ok, lines = quietly(dockerfile.check_dockerfile, path)
        self.assertFalse(ok)
        self.assertIn("not copied from the builder stage", "\n".join(lines))

    def test_the_default_target_is_the_last_stage(self):
        path = self.temporary(dockerfile_with([("AS runtime\n", "AS release\n")]))
        ok, lines = quietly(dockerfile.check_dockerfile, path)
        self.assertFalse(ok)
        self.assertIn("the last stage (the default target) must be runtime", "\n".join(lines))

    def test_the_last_stage_only_adds_binaries(self):
        path = self.temporary(dockerfile_with([("AS runtime\n", "AS runtime\nUSER 0:0\n")]))
        ok, lines = quietly(dockerfile.check_dockerfile, path)
        self.assertFalse(ok)
        self.assertIn("the last stage may only add the binaries", "\n".join(lines))

    def test_a_copy_source_missing_from_the_context_fails(self):
        path = self.temporary(dockerfile_with([("COPY migrations migrations", "COPY migration migrations")]))
        ok, lines = quietly(dockerfile.check_dockerfile, path)
        self.assertFalse(ok)
        self.assertIn("COPY source migration does not exist", "\n".join(lines))


class Values(unittest.TestCase):
    def test_durations(self):
        self.assertEqual(common.duration_secs("25s"), 25)
        self.assertEqual(common.duration_secs("10m"), 600)
        self.assertEqual(common.duration_secs("40"), 40)
        self.assertIsNone(common.duration_secs("soon"))

    def test_compose_interpolation_takes_defaults_with_the_shell_empty(self):
        self.assertEqual(compose.interpolate("${DRIVER:-postgres}"), "postgres")
        self.assertEqual(compose.interpolate("${TOKEN:-}"), "")
        self.assertEqual(compose.interpolate("a$$b"), "a$b")
        self.assertEqual(compose.interpolate(True), "true")

    def test_the_database_is_pointed_at_a_refusing_port_keeping_scheme_and_path(self):
        env = config_keys.offline_database({"ORDER__DATABASE__URL": "mysql://root:pw@mysql:3306/order_db?ssl=false"})
        self.assertEqual(env["ORDER__DATABASE__URL"], "mysql://postgres@127.0.0.1:1/order_db?ssl=false")
        self.assertEqual((env["ORDER__DATABASE__HOST"], env["ORDER__DATABASE__PORT"]), ("127.0.0.1", "1"))


class K8sSpec(TempFiles):
    def test_quantities(self):
        self.assertEqual(k8s_spec.quantity_mib("64Mi"), 64)
        self.assertEqual(k8s_spec.quantity_mib("1Gi"), 1024)
        self.assertEqual(k8s_spec.quantity_mib("512M"), 489)  # 512 MB, rounded up to whole MiB
        self.assertEqual(k8s_spec.cpus("500m"), 0.5)
        self.assertEqual(k8s_spec.cpus("2"), 2.0)
        with self.assertRaises(ValueError):
            k8s_spec.quantity_mib("lots")

    def test_the_worker_deployment_as_the_container_smoke_test_runs_it(self):
        spec = k8s_spec.spec("k8s/deployment-worker.yaml", "k8s/configmap.yaml")
        self.assertEqual(spec["command"], ["order-worker"])
        self.assertEqual((spec["user"], spec["group"]), (10001, 10001))
        self.assertTrue(spec["read_only_root"] and spec["no_new_privileges"])
        self.assertEqual(spec["cap_drop"], ["ALL"])
        self.assertEqual(spec["tmpfs"], [{"path": "/tmp", "size_mib": 64}])
        # The container's own env wins over the ConfigMap's.
        self.assertEqual(spec["env"]["ORDER__OBSERVABILITY__PORT"], "8084")
        self.assertEqual(spec["env"]["ORDER__DATABASE__AUTO_MIGRATE"], "false")
        self.assertEqual(spec["env"]["ORDER__RABBITMQ__QUEUE"], "order-service.seckill-success")
        # Named probe ports resolved to the container's port.
        self.assertEqual({p["port"] for p in spec["probes"]}, {8084})
        self.assertEqual([p["kind"] for p in spec["probes"]], ["startupProbe", "livenessProbe", "readinessProbe"])
        self.assertEqual(spec["scrape"], {"path": "/metrics", "port": 8084})

    def test_a_probe_on_a_port_the_container_lacks_is_refused(self):
        text = Path("k8s/deployment-worker.yaml").read_text(encoding="utf-8")
        path = self.write_temporary(text.replace("port: http", "port: metrics", 1), ".yaml")
        with self.assertRaises(SystemExit) as raised:
            k8s_spec.spec(path, "k8s/configmap.yaml")
        self.assertIn("names port 'metrics'", str(raised.exception))


if __name__ == "__main__":
    unittest.main()

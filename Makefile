# ClawStaff fleet. `make preview STACK=prod` and `make test` are the two commands of the README.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK ?= local
JSON ?=

.PHONY: venv preview test unit lint up engine vm vm-down vm-isolation-report isolation-report isolation-report-show bench controls allowlist policy-schema policy-bundle

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Offline preview: the program under Pulumi mocks, the policy pack, the plan. No cloud, no Pulumi CLI.
preview: venv
	$(PY) -m tools.preview --stack $(STACK) $(if $(JSON),--json $(JSON))

# The whole suite. Tests that need Docker, nft or cloud-init skip outside CI when those are missing;
# in CI (CI=true) they fail instead. `make engine` starts the Docker engine they use. Two pytest runs
# side by side: the VM tier (most of the time, mostly waiting on the VM; its output in build/test-vm.log,
# followed live once the other tiers are done) and every other tier. The target fails if either does.
# The VM tier is interrupted after VM_TIMEOUT seconds (pytest then tears the VM down and prints where
# it was), so a hung VM fails with its log instead of running out CI's clock.
VM_TIMEOUT ?= 3300
test: venv
	@mkdir -p build
	@timeout --signal=INT --kill-after=120 $(VM_TIMEOUT) $(PY) -m pytest tests/vm --durations=25 > build/test-vm.log 2>&1 & vm=$$!; \
	$(PY) -m pytest --ignore=tests/vm --durations=10; rest=$$?; \
	echo "=== the VM tier (tests/vm, build/test-vm.log; interrupted if it runs past $(VM_TIMEOUT) s) ==="; \
	tail -n +1 --pid=$$vm -f build/test-vm.log; \
	wait $$vm; vmrc=$$?; \
	echo "=== make test: VM tier exit $$vmrc, other tiers exit $$rest ==="; \
	test $$rest -eq 0 && test $$vmrc -eq 0

unit: venv
	$(PY) -m pytest tests/unit tests/policies

# The linter alone (the suite runs it too: tests/unit/test_lint.py); settings in pyproject.toml.
lint: venv
	$(PY) -m ruff check .

# The policy pack's control map (docs/controls.md, checked current by tests/policies/test_controls.py), its
# allowlist tables (docs/allowlist.md) and the JSON schema of its config (policies/config.schema.json), each
# generated and checked current the same way.
controls: venv
	$(PY) policies/controls.py --markdown > docs/controls.md

allowlist: venv
	$(PY) policies/allowlist.py --markdown > docs/allowlist.md

policy-schema: venv
	$(PY) policies/config_schema.py > policies/config.schema.json

# A self-contained copy of the pack for `pulumi policy publish` (README: "Publishing the policy pack").
policy-bundle: venv
	$(PY) -m tools.policy_bundle --out build/policy-pack

# The real thing: needs the Pulumi CLI, a Hetzner token (HCLOUD_TOKEN) and the stack's secrets.
up: venv
	pulumi up --stack $(STACK) --policy-pack policies --policy-pack-config policies/config/$(STACK).json

# claw-runtime and egress-proxy, from pinned Debian packages (mmdebstrap), into the local engine.
include images/images.mk

# This machine's Docker engine, configured with the daemon.json and host rules the program renders.
engine: venv
	$(PY) -m tools.engine start

# The production host path on a Debian 13 VM (root; QEMU/TCG): build the image, boot it with the
# user-data the program renders, first contact and bootstrap over SSH. `make vm-down` stops it.
vm: venv
	$(PY) -m tools.vm up

vm-down: venv
	$(PY) -m tools.vm down

# The VM tier (boot, provision, cages, probes, teardown) and the VM host's isolation scorecard
# (build/vm-isolation-report.json; the committed copy is docs/vm-isolation-report.md).
vm-isolation-report: venv
	$(PY) -m tools.isolation_report --vm --markdown docs/vm-isolation-report.md

# The isolation suite on the real engine (needs root, `make engine`, `make images`): attacks the local
# stack's cages and prints the scorecard (also build/isolation-report.json).
isolation-report: venv
	$(PY) -m tools.isolation_report --markdown build/isolation-report.md

# The last scorecard again, without running anything.
isolation-report-show: venv
	$(PY) -m tools.isolation_report --no-run

# Benchmarks (not tests): scale, churn, placement quality, per-cage overhead, density. Writes
# benchmarks/results.json and prints each figure with its goal; overhead and density need the engine.
bench: venv
	$(PY) -m benchmarks.run

# Two commands do everything on a fresh machine:
#   make demo   build, install and run the Tiny Shakespeare demo on CPU
#   make test   build, install and run every test (cargo test + pytest)
# Both create the virtual environment $(VENV), install the dependencies from PyPI,
# build the wheel with maturin and install that wheel (tests import the installed package).

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
WHEEL_DIR := target/wheels
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: demo test wheel install install-test bench gpu-check kernel-report lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

wheel: $(PY)
	$(PY) -m pip install --quiet "maturin>=1.8,<2"
	rm -rf $(WHEEL_DIR)
	$(VENV)/bin/maturin build --release --quiet -o $(WHEEL_DIR)

# Installs the dependencies (with the given extras), then the freshly built wheel itself.
define install_wheel
	$(PY) -m pip install --quiet "$$(ls $(WHEEL_DIR)/smallgpt-*.whl)$(1)"
	$(PY) -m pip install --quiet --force-reinstall --no-deps $(WHEEL_DIR)/smallgpt-*.whl
endef

install: wheel
	$(call install_wheel,[plot])

install-test: wheel
	$(call install_wheel,[test])

demo: install
	$(PY) -m smallgpt.demo $(DEMO_ARGS)

test: install-test
	cargo test --quiet -p rust_bpe
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install-test
	$(PY) -m pip install --quiet "$$(ls $(WHEEL_DIR)/smallgpt-*.whl)[bench]" || true
	$(PY) -m pip install --quiet "pytest-benchmark[histogram]" || true  # for --benchmark-histogram
	$(PY) -m pytest benches --benchmark

# Validates a CUDA GPU (under 8 minutes on an H100/H200) with the package already installed: it
# builds and installs nothing (the GPU machine may have no registry). Reports go to gpu_check/;
# `make gpu-check PY=python3` runs another interpreter's installed smallgpt.
gpu-check:
	$(PY) -m smallgpt.gpu_check --out gpu_check

# Compiles every kernel's autotune candidates for sm_80, sm_86, sm_89 and sm_90 without a GPU (about
# 45 minutes on 2 busy cores; KERNEL_JOBS processes) into the committed report that
# tests/test_kernels_compile.py checks: rerun it after changing a kernel or its candidate lists.
KERNEL_JOBS ?= 1
kernel-report:
	env -u TRITON_INTERPRET $(PY) -m smallgpt.kernels.check --compile-only \
		--report benches/kernel_report.json --jobs $(KERNEL_JOBS)

lint: $(PY)
	$(PY) -m pip install --quiet ruff pytest
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/ruff format --check python tests benches
	$(PY) -m pytest -q -p no:cacheprovider tests/test_layout.py  # imports only go down the pipeline
	cargo fmt --check
	cargo clippy --quiet -p rust_bpe --all-targets -- -D warnings

clean:
	rm -rf $(VENV) $(WHEEL_DIR) runs

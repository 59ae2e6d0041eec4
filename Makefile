# Set-up and entry points for a fresh Linux machine (Python 3.11; root for apt, or the
# Debian libraries below already present). Everything lands in $(VENV).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= occuseg_out
# Debian libraries that open3d's wheel links against.
APT_LIBS := libusb-1.0-0 libgl1 libgomp1 libegl1
# The browser view's test draws the page in headless Chromium.
APT_TEST := chromium
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
SOURCES := setup.py setup.cfg package.xml $(shell find occuseg_ros config models launch -type f -not -path '*/__pycache__/*' 2>/dev/null)

.PHONY: live test bench clean

# DDS discovery stays on this machine unless the caller says otherwise (the demo and the
# tests talk to themselves; a robot setup sets its own ROS_AUTOMATIC_DISCOVERY_RANGE).
live test: export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

## The main job: the live system on the simulated RGB-D camera for 90 s; the labelled map,
## a picture of it and the scores against the simulator's ground truth land in $(OUT).
live: $(VENV)/.package
	$(BIN)/occuseg live --out $(OUT)

## The test suite (no GPU needed).
test: $(VENV)/.package $(VENV)/.testdeps
	cd test && ../$(BIN)/python -m pytest -q .

bench: $(VENV)/.package
	$(BIN)/occuseg bench $(wildcard ../shared/data/scannet/scene0000_00.npz)

$(VENV)/.deps:
	@missing=$$(for p in $(APT_LIBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian libraries: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU wheel where one is on disk; spconv's CPU build next.
	$(PIP) install torch==2.13.0
	$(PIP) install spconv==2.3.8
	$(PIP) install numba pyyaml "open3d==0.20.0" rosbags pytest hypothesis \
	  ros-rclpy ros-sensor-msgs ros-visualization-msgs ros-std-msgs ros-std-srvs \
	  ros-geometry-msgs ros-nav-msgs ros-diagnostic-msgs ros-rmw-fastrtps-cpp
	touch $@

$(VENV)/.testdeps: $(VENV)/.deps
	@missing=$$(for p in $(APT_TEST); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for the tests: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	touch $@

$(VENV)/.package: $(VENV)/.deps $(SOURCES)
	$(PIP) install --no-deps --force-reinstall .
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info $(OUT)

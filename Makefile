# Set-up and entry points for a fresh Linux machine (Python 3.11; root for apt, or the
# Debian libraries below already present). Everything lands in $(VENV).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= occuseg_out
# Debian libraries that open3d's wheel links against.
APT_LIBS := libusb-1.0-0 libgl1 libgomp1 libegl1
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
SOURCES := setup.py setup.cfg package.xml $(shell find occuseg_ros config models -type f -not -path '*/__pycache__/*' 2>/dev/null)
# Until a trained model ships in models/, the main job runs the clustering on oracle outputs.
PREDICTIONS := $(if $(wildcard models/occuseg_default.pt),--predictions network,--predictions oracle --oracle-noise 0.05)

.PHONY: live test bench clean

## The main job: generate a furnished room, segment it, score it.
live: $(VENV)/.package
	mkdir -p $(OUT)
	$(BIN)/occuseg generate --seed 7 --out $(OUT)/room.npz
	$(BIN)/occuseg segment $(OUT)/room.npz --out $(OUT)/room_pred.npz $(PREDICTIONS)
	$(BIN)/occuseg evaluate --pred $(OUT)/room_pred.npz --gt $(OUT)/room.npz

## The test suite (no GPU needed).
test: $(VENV)/.package
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
	$(PIP) install numba pyyaml "open3d==0.20.0" rosbags pytest \
	  ros-rclpy ros-sensor-msgs ros-visualization-msgs ros-std-msgs ros-std-srvs \
	  ros-geometry-msgs ros-nav-msgs ros-diagnostic-msgs ros-rmw-fastrtps-cpp
	touch $@

$(VENV)/.package: $(VENV)/.deps $(SOURCES)
	$(PIP) install --no-deps --force-reinstall .
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info $(OUT)

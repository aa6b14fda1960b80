# The appliance's verbs.  Each recipe calls one script in scripts/; the logic lives there.
# Container engine: docker where a daemon answers, else podman (override: ENGINE=...).

IMAGE ?= ibeam-appliance
TAG ?= latest

.PHONY: demo test build build-sim run lint bench soak clean

## demo: the whole appliance on this machine (simulator as gateway, demo account), foreground
demo:
	scripts/demo.sh

## test: the whole suite: unit, e2e, scenarios, image, soak, bench smoke
test:
	scripts/test.sh

## build: the image with IBKR's gateway (downloads the official zip)
build:
	scripts/build.sh ibkr $(IMAGE):$(TAG)

## build-sim: the same image with the simulator as its gateway
build-sim:
	scripts/build.sh sim $(IMAGE):sim

## run: run $(IMAGE):$(TAG) with env.list, ports 5000/5001 on 127.0.0.1
run:
	scripts/run.sh $(IMAGE):$(TAG)

## lint: ruff checks and formatting, shell syntax
lint:
	scripts/lint.sh

## bench: benchmarks against the simulator
bench:
	scripts/bench.sh

## soak: a 10-minute soak with random faults (SOAK_ARGS="--seed 7 --duration 1800")
soak:
	scripts/soak.sh $(SOAK_ARGS)

## clean: remove the demo's files
clean:
	rm -rf .demo

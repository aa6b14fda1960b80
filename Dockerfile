# The IBeam appliance: supervisord runs a virtual display, IBKR's Client Portal
# Gateway and the agent that keeps the gateway logged in.
#
# Two final stages share every layer but the gateway's:
#   ibkr (default)  the gateway from IBKR's official zip    make build
#   sim             the project's gateway simulator         make build-sim
#
# pip needs the host's CA bundle where the package index sits behind a proxy:
#   podman build --format docker --secret id=pipca,src=/etc/ssl/certs/ca-certificates.crt ...
# (--format docker keeps HEALTHCHECK, which podman's default OCI format drops.)

# Any Debian bookworm image; pin it by digest for production builds, e.g.
# --build-arg BASE_IMAGE=debian:bookworm-slim@sha256:<digest>
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS base

# Debian's chromium and chromium-driver come from the same source package, so
# their versions always match.  The JRE runs IBKR's gateway (it asks for Java 8
# or later; 17 is bookworm's).  supervisor is the process manager (PID 1);
# fonts-liberation gives the login page readable glyphs.
RUN set -eux; \
	export DEBIAN_FRONTEND=noninteractive; \
	mkdir -p /usr/share/man/man1; \
	apt-get update; \
	apt-get install -y --no-install-recommends \
		ca-certificates \
		chromium \
		chromium-driver \
		fonts-liberation \
		openjdk-17-jre-headless \
		python3 \
		python3-venv \
		supervisor \
		xvfb \
	; \
	rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged user (uid/gid 1000) owns everything the appliance
# writes; mount inputs readable by it and outputs writable by it.
RUN set -eux; \
	groupadd --gid 1000 ibeam; \
	useradd --uid 1000 --gid ibeam --create-home --shell /usr/sbin/nologin ibeam; \
	mkdir -p /srv/inputs /srv/outputs /srv/clientportal.gw /run/ibeam; \
	chown ibeam:ibeam /srv/outputs /srv/clientportal.gw /run/ibeam; \
	mkdir -p /tmp/.X11-unix; \
	chmod 1777 /tmp/.X11-unix

# IBKR's gateway: downloaded in a stage of its own so that code changes never
# download it again.  Only `make build` (target ibkr) uses this stage.
FROM base AS ibkr-gateway
# GATEWAY_URL: IBKR's zip, or a mirror of it.  GATEWAY_SHA256: empty (accept
# what is there and print its digest) or the 64 hex digits it must match.
ARG GATEWAY_URL=https://download2.interactivebrokers.com/portal/clientportal.gw.zip
ARG GATEWAY_SHA256=
COPY image/fetch_gateway.py /usr/local/lib/ibeam/fetch_gateway.py
RUN set -eux; \
	python3 /usr/local/lib/ibeam/fetch_gateway.py "$GATEWAY_URL" /srv/clientportal.gw "$GATEWAY_SHA256"; \
	chown -R ibeam:ibeam /srv/clientportal.gw

# The Python dependencies, built where a compiler is at hand (pyjks needs
# twofish, which has no binary wheel) and copied into the image without it.
FROM base AS python-deps
RUN set -eux; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update; \
	apt-get install -y --no-install-recommends gcc libc6-dev python3-dev; \
	rm -rf /var/lib/apt/lists/*
# From pyproject.toml alone: rebuilt only when the dependencies change.
COPY pyproject.toml /tmp/pyproject.toml
RUN --mount=type=secret,id=pipca,required=false set -eux; \
	if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
	python3 -m venv /opt/venv; \
	python3 -c 'import tomllib, sys; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
		/tmp/pyproject.toml > /tmp/requirements.txt; \
	/opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt

FROM base AS app

ENV VIRTUAL_ENV=/opt/venv \
	PATH=/opt/venv/bin:$PATH \
	PYTHONUNBUFFERED=1 \
	PYTHONDONTWRITEBYTECODE=1

COPY --from=python-deps /opt/venv /opt/venv
COPY pyproject.toml /opt/ibeam/src/pyproject.toml
COPY README.md /opt/ibeam/src/README.md
COPY ibeam_agents /opt/ibeam/src/ibeam_agents
COPY gateway_sim /opt/ibeam/src/gateway_sim
RUN --mount=type=secret,id=pipca,required=false set -eux; \
	if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
	pip install --no-cache-dir --disable-pip-version-check --no-deps /opt/ibeam/src; \
	rm -rf /opt/ibeam/src/build /opt/ibeam/src/*.egg-info

# Debian's own supervisord.conf is replaced: `supervisorctl status` in the
# container then finds ours without -c.
COPY supervisord.conf /etc/supervisor/supervisord.conf
COPY templates /etc/ibeam/templates
COPY image/entrypoint.sh /usr/local/bin/ibeam-entrypoint
COPY image/healthcheck.py /usr/local/lib/ibeam/healthcheck.py

ENV IBEAM_GATEWAY_DIR=/srv/clientportal.gw \
	IBEAM_INPUTS_DIR=/srv/inputs \
	IBEAM_OUTPUTS_DIR=/srv/outputs \
	IBEAM_RUN_DIR=/run/ibeam \
	IBEAM_HEALTH_SERVER_HOST=0.0.0.0 \
	IBEAM_CHROME_BINARY_PATH=/usr/bin/chromium \
	IBEAM_CHROME_DRIVER_PATH=/usr/bin/chromedriver \
	DISPLAY=:99

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ibeam-appliance" \
	org.opencontainers.image.description="Keeps an IBKR Client Portal Gateway running and logged in, headless" \
	org.opencontainers.image.licenses="Apache-2.0" \
	org.opencontainers.image.version="${VERSION}" \
	org.opencontainers.image.base.name="debian:bookworm-slim"

# 5000: the gateway (HTTPS).  5001: the agent's health server (HTTP).
EXPOSE 5000 5001
# inputs: conf.yaml, certificates, second-factor handler (read only is fine).
# outputs: failure budget, screenshots and page dumps; keep it across restarts
# so that a restarted container remembers failed logins.
VOLUME ["/srv/inputs", "/srv/outputs"]

# /livez: the agent's loop is alive; see image/healthcheck.py for why not /readyz.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
	CMD ["python", "/usr/local/lib/ibeam/healthcheck.py"]

USER ibeam
WORKDIR /home/ibeam
ENTRYPOINT ["/usr/local/bin/ibeam-entrypoint"]
# supervisord handles SIGTERM (the engine's stop signal): it stops the agent
# first, which logs the gateway out, then the gateway and the display.
CMD ["supervisord", "-c", "/etc/supervisor/supervisord.conf"]

# The simulator as the gateway: what the tests and the demo image run.
FROM app AS sim
# The installer stages its files next to the target, in root-owned /srv.
USER root
RUN set -eux; \
	python -m gateway_sim install /srv/clientportal.gw; \
	chown -R ibeam:ibeam /srv/clientportal.gw
USER ibeam
LABEL org.opencontainers.image.description="IBeam appliance with the gateway simulator (tests and demos; no IBKR access)"

# IBKR's gateway (default target: the last stage).
FROM app AS ibkr
COPY --from=ibkr-gateway --chown=ibeam:ibeam /srv/clientportal.gw /srv/clientportal.gw

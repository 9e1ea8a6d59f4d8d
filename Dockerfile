# eservice-gateway: the MX for retired filing addresses.
#   docker build -t eservice-gateway .
#   docker run -d -p 25:2525 -v gw-state:/var/lib/eservice-gateway \
#       -v /srv/gateway/gateway.toml:/etc/eservice-gateway/gateway.toml:ro eservice-gateway
# Pinned to a patch release: 3.11.15 carries the email header-folding and parser-DoS fixes,
# and 3.11 is what the test suite runs on.
FROM python:3.11.15-slim

RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --home-dir /var/lib/eservice-gateway gateway \
 && install -d -o gateway -g gateway /var/lib/eservice-gateway /var/log/eservice-gateway

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY config ./config
COPY templates ./templates
RUN pip install --no-cache-dir . && cd / && rm -rf /src

# The image's defaults live in its config file, not in GATEWAY_* variables: a variable beats
# the file, so defaults set there would silently override a config mounted over this one.
# Inside the container: listen on every IPv4 address (publish the port as 25), /metrics and
# /readyz too (publish 9125 only to the scraper), JSON log lines to standard output. The
# DKIM key is made on first start, in the volume, never baked into the image.
RUN gateway init --config /etc/eservice-gateway/gateway.toml \
        --state-dir /var/lib/eservice-gateway \
        --listen 0.0.0.0:2525 --metrics-listen 0.0.0.0:9125 --log-format json --no-key \
 && chown -R gateway:gateway /var/lib/eservice-gateway
# Only where the config file is; mount your own at this path to replace it.
ENV GATEWAY_CONFIG=/etc/eservice-gateway/gateway.toml \
    PYTHONUNBUFFERED=1

VOLUME ["/var/lib/eservice-gateway", "/var/log/eservice-gateway"]
EXPOSE 2525 9125
USER gateway
WORKDIR /var/lib/eservice-gateway

# /readyz answers 200 only while the SMTP listener serves, the state store commits and the
# delivery worker polls its queue; urlopen raises (exit 1) on its 503 or on no answer. Python's
# urllib, because python:slim has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9125/readyz', timeout=4)"]

# Exec form: the gateway is PID 1 and receives SIGTERM itself, to drain; its composer
# process exits with it. drain_timeout (7 s) fits Docker's default 10 s stop grace period;
# raise stop_grace_period (compose) or --time (docker stop) with it.
ENTRYPOINT ["gateway"]
CMD ["serve"]

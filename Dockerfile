# eservice-gateway: the MX for retired filing addresses.
#   docker build -t eservice-gateway .
#   docker run -d -p 25:2525 -v gw-state:/var/lib/eservice-gateway \
#       -v /etc/eservice-gateway/gateway.toml:/etc/eservice-gateway/gateway.toml:ro \
#       -e GATEWAY_CONFIG=/etc/eservice-gateway/gateway.toml eservice-gateway
FROM python:3.11-slim

RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --home-dir /var/lib/eservice-gateway gateway \
 && install -d -o gateway -g gateway /var/lib/eservice-gateway /var/log/eservice-gateway

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY config ./config
COPY templates ./templates
RUN pip install --no-cache-dir . && cd / && rm -rf /src

# Listen on every IPv4 address inside the container; publish the port as 25.
# The metrics and health endpoint too (loopback elsewhere): publish 9125 only to the scraper.
ENV GATEWAY_SERVER__LISTEN=0.0.0.0:2525 \
    GATEWAY_METRICS__LISTEN=0.0.0.0:9125 \
    GATEWAY_STORAGE__STATE_DIR=/var/lib/eservice-gateway \
    GATEWAY_DELIVERY__OUTBOX_DIR=/var/lib/eservice-gateway/notices \
    GATEWAY_AUDIT__FORMAT=json \
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
# process exits with it.
ENTRYPOINT ["gateway"]
CMD ["serve"]

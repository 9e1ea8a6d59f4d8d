# eservice-gateway: the MX for retired filing addresses.
#   docker build -t eservice-gateway .
#   docker run -d -p 25:2525 -v gw-state:/var/lib/eservice-gateway \
#       -v /etc/eservice-gateway/gateway.toml:/etc/eservice-gateway/gateway.toml:ro eservice-gateway
# Pinned to a patch release: 3.13.12 carries the email header-folding and parser-DoS fixes.
FROM python:3.13.12-slim

RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --home-dir /var/lib/eservice-gateway gateway \
 && install -d -o gateway -g gateway /var/lib/eservice-gateway /var/log/eservice-gateway

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY config ./config
COPY templates ./templates
# The image's defaults live in its config file, not in GATEWAY_* variables: the environment
# beats the file, so variables set here would silently override a mounted config. The file is
# the built-in one with: every IPv4 address inside the container for SMTP (publish it as 25)
# and for metrics and health (loopback elsewhere; publish 9125 only to the scraper), state in
# the volume, JSON logs. check-config fails the build if an edit no longer applies.
RUN pip install --no-cache-dir . \
 && install -d /etc/eservice-gateway \
 && sed -e 's|^listen = \["127.0.0.1:2525"\]|listen = ["0.0.0.0:2525"]|' \
        -e 's|^listen = "127.0.0.1:9125"|listen = "0.0.0.0:9125"|' \
        -e 's|^state_dir = "state"|state_dir = "/var/lib/eservice-gateway"|' \
        -e 's|^outbox_dir = "state/notices"|outbox_dir = "/var/lib/eservice-gateway/notices"|' \
        -e 's|^format = "auto"|format = "json"|' \
        config/gateway.toml > /etc/eservice-gateway/gateway.toml \
 && test "$(grep -c -E '^[a-z_]+ = .*(0\.0\.0\.0:|/var/lib/eservice-gateway|"json")' \
        /etc/eservice-gateway/gateway.toml)" = 5 \
 && gateway check-config --config /etc/eservice-gateway/gateway.toml > /dev/null \
 && cd / && rm -rf /src

# GATEWAY_CONFIG names the file (mount yours over it); it sets no setting itself.
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
# process exits with it.
ENTRYPOINT ["gateway"]
CMD ["serve"]

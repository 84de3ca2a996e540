#!/bin/sh
# Entry point of the citymesh node image: create the city's identity on first start, then run the
# node. Environment: CITY, COUNTRY (ISO 3166-1 alpha-3), NETWORK (default citymesh),
# RELAY_URL (default nats://relay:4222), LISTEN (default 0.0.0.0:8080).
# Any arguments replace the default command, e.g. `docker compose run --rm mechelen citymesh status`.
set -eu

HOME_DIR=/data
NETWORK="${NETWORK:-citymesh}"
RELAY_URL="${RELAY_URL:-nats://relay:4222}"
LISTEN="${LISTEN:-0.0.0.0:8080}"

# An empty home has no identity yet: create one (signing key 0600, config, API token, genesis).
if [ -z "$(ls -A "$HOME_DIR")" ]; then
    : "${CITY:?set CITY to the city name for the first start}"
    : "${COUNTRY:?set COUNTRY to the ISO 3166-1 alpha-3 code for the first start}"
    citymesh init --home "$HOME_DIR" --city "$CITY" --country "$COUNTRY" --network "$NETWORK"
fi

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
exec citymesh node run --home "$HOME_DIR" --relay "$RELAY_URL" --listen "$LISTEN"

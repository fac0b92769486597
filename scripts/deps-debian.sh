#!/bin/sh
# Installs llmpack's build and test dependencies from Debian packages.
set -e
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq build-essential pkg-config libzstd-dev libarchive-dev \
    libxxhash-dev libjansson-dev libpcre2-dev libcmocka-dev clang zstd zip time \
    liblz4-dev libacl1-dev python3 python3-jsonschema chromium >/dev/null
# liblz4-dev and libacl1-dev: libarchive.pc names them for `pkg-config --static` links.
# python3-jsonschema: the tests check verify --json against docs/verify.schema.json with it
# (they skip that check, saying so, when it is absent).
# chromium: tests/test_verify_report.c renders verify's HTML report headless (it skips the
# rendering, saying so, when chromium is absent).

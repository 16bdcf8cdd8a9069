#!/bin/sh
# Makes the certificate of the original doorbell lab's signaling server, the
# usual Flask way: self-signed, RSA 4096, CN = the server's IP address, and NO
# subjectAltName (so name verification fails even when the certificate is
# trusted; a client must pin it). Writes OUTDIR/cert.pem and OUTDIR/key.pem.
#
# Prints on stdout:
#   sha256 Fingerprint=AB:CD:...     SHA-256 of the certificate's DER (openssl's line)
#   SPKI <base64>                    base64 SHA-256 of the SubjectPublicKeyInfo, the
#                                    form Chromium's --ignore-certificate-errors-spki-list takes
#
# Usage: tests/lab/make-cert.sh OUTDIR [--san]
#   --san: a proper certificate instead (docs/install.md): the same, plus
#          subjectAltName IP:127.0.0.1, so a name check can pass.
set -eu

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ]; then
    echo "usage: $0 OUTDIR [--san]" >&2
    exit 2
fi
out=$1
san=${2:-}
mkdir -p "$out"

if [ "$san" = "--san" ]; then
    if ! log=$(openssl req -x509 -newkey rsa:4096 -nodes -out "$out/cert.pem" -keyout "$out/key.pem" \
        -days 365 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>&1); then
        printf '%s\n' "$log" >&2
        exit 1
    fi
else
    # The lab's command; -subj answers the prompts (only the common name, like
    # a student typing the server's IP address). No -addext: no subjectAltName.
    # Its key generation progress dots are shown only if it fails.
    if ! log=$(openssl req -x509 -newkey rsa:4096 -nodes -out "$out/cert.pem" -keyout "$out/key.pem" \
        -days 365 -subj "/CN=127.0.0.1" 2>&1); then
        printf '%s\n' "$log" >&2
        exit 1
    fi
    # A local openssl.cnf could add extensions to `req -x509`: refuse a
    # certificate that has a subjectAltName, since the point is that it has none.
    if openssl x509 -in "$out/cert.pem" -noout -text | grep -q "Subject Alternative Name"; then
        echo "make-cert.sh: openssl added a subjectAltName (check OPENSSL_CONF); the lab's certificate has none" >&2
        exit 1
    fi
fi

openssl x509 -in "$out/cert.pem" -noout -fingerprint -sha256
spki=$(openssl x509 -in "$out/cert.pem" -noout -pubkey \
    | openssl pkey -pubin -outform der \
    | openssl dgst -sha256 -binary \
    | openssl base64 -A)
echo "SPKI $spki"

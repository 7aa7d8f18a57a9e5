#!/bin/sh
# Make a private certificate authority and a server certificate for Mosquitto's TLS listener.
#
#   broker/make-certs.sh OUTDIR HOSTNAME [MORE NAMES OR IP ADDRESSES...]
#
# Writes OUTDIR/ca.crt (give this to clients: --ca-file), OUTDIR/ca.key (keep it offline),
# OUTDIR/server.crt and OUTDIR/server.key (for mosquitto.conf). The server certificate names
# every HOSTNAME given (clients check the name they connect to) and lasts 825 days; run the
# script again with the same OUTDIR to renew it: the CA is kept if it exists.
# Needs only openssl. With a public name, a Let's Encrypt certificate works as well.
set -eu

if [ "$#" -lt 2 ]; then
    echo "usage: $0 OUTDIR HOSTNAME [MORE NAMES OR IP ADDRESSES...]" >&2
    exit 2
fi
out=$1
shift
mkdir -p "$out"
umask 077

san=""
for name in "$@"; do
    case "$name" in
        *[!0-9.]*) entry="DNS:$name" ;;
        *) entry="IP:$name" ;;
    esac
    san="${san:+$san,}$entry"
done

if [ ! -f "$out/ca.key" ] || [ ! -f "$out/ca.crt" ]; then
    openssl req -x509 -newkey rsa:3072 -sha256 -days 3650 -nodes \
        -keyout "$out/ca.key" -out "$out/ca.crt" \
        -subj "/CN=hand-mqtt private CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

openssl req -newkey rsa:2048 -sha256 -nodes \
    -keyout "$out/server.key" -out "$out/server.csr" -subj "/CN=$1" 2>/dev/null
ext="$out/server.ext"
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$san" > "$ext"
openssl x509 -req -sha256 -days 825 -in "$out/server.csr" \
    -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -extfile "$ext" -out "$out/server.crt" 2>/dev/null
rm -f "$out/server.csr" "$ext" "$out/ca.srl"

# The broker reads these as its own user (uid 1883 in the eclipse-mosquitto image).
chmod 644 "$out/ca.crt" "$out/server.crt"
chmod 640 "$out/server.key"
echo "wrote $out/ca.crt, $out/server.crt and $out/server.key for: $*" >&2

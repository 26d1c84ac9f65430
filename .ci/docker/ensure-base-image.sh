#!/usr/bin/env bash
# Makes sure the base image debian:bookworm-slim exists in the local engine:
# pulls it when a registry answers, otherwise builds an equivalent slim root
# filesystem with debootstrap and imports it under the same name.
set -euo pipefail

IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

die() { echo "error: $*" >&2; exit 1; }

docker image inspect "$IMAGE" >/dev/null 2>&1 && exit 0

echo "Pulling $IMAGE"
if timeout 120 docker pull "$IMAGE"; then
  exit 0
fi

echo "No registry answered: building $IMAGE with debootstrap"
[ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
if ! command -v debootstrap >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
fi

rootfs=$(mktemp -d /var/tmp/pokegen-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
# mktemp makes the folder private, and it becomes the image's "/": everyone must traverse it.
chmod 0755 "$rootfs"

debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >/dev/null

# What makes the official image "slim": no documentation, manuals or
# translations, now or from later installs, and no package lists kept.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
CFG
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
CFG
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<CFG
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
CFG
rm -f "$rootfs/etc/apt/sources.list"
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/man" "$rootfs/usr/share/info" "$rootfs/usr/share/locale" \
  -mindepth 1 -delete 2>/dev/null || true
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb

# An imported tarball has no environment: give it the PATH the official image sets.
tar -C "$rootfs" --numeric-owner -c . \
  | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' - "$IMAGE" >/dev/null
echo "Imported $IMAGE"

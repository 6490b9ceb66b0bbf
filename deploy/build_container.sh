#!/usr/bin/env bash
# Build the genre_detector Bento into an OCI image with podman, run it, and smoke-test it.
#
#   deploy/build_container.sh [--port N] [--image NAME:TAG] [--skip-build] [--batch]
#
# --batch builds genre-detector-batch:latest instead: the same Bento with pyproject's [batch]
# extra added (Ray Data), for deploy/ray/rayjob.yaml; its smoke test tags clips on Ray.
#
# Steps (each one is skipped when already done, so the script is safe to re-run):
#   1. apt-get install podman buildah runc debootstrap fuse-overlayfs uidmap (if missing)
#   2. /etc/containers/containers.conf: default_ulimits within this host's hard limit
#   3. bentoml build                      (repo root, caller's BENTOML_HOME)
#   4. base image named like the Dockerfile's FROM (python:3.11-slim), made locally from a
#      debootstrapped, slimmed Debian bookworm root cached in $GENRE_BASE_ROOT -- only if
#      podman has no such image (Docker Hub is not needed, nor reachable here)
#   5. bentoml containerize <bento> --backend podman -t $IMAGE --opt squash
#      --opt build-arg=IMAGE_SLIM=1   (BUILDAH_ISOLATION=chroot; deploy/image_slim.sh)
#   6. deploy/smoke_image.py: the service and the delivery worker from the image on a shared
#      catalog: /readyz, /predict on a real clip, POST /tracks, similar, one webhook delivered
#      by `python -m genre_detector deliver` to a receiver on this host
# Exits non-zero on any failure (the container's log is printed when it fails to serve).
#
# Environment (all optional):
#   BENTOML_HOME            model/Bento store (default ~/bentoml, like the Makefile)
#   GENRE_CONTAINER_PORT    host port; with --network host the server binds it directly (3300)
#   GENRE_IMAGE             image name (genre-detector:latest; --batch: genre-detector-batch:latest)
#   GENRE_BASE_ROOT         debootstrap cache, outside the repo (/var/tmp/genre-base)
#   GENRE_DEBIAN_MIRROR     (http://deb.debian.org/debian)
#   GENRE_SMOKE_CLIP        (<repo>/../shared/data/gtzan-samples/rock.00000.wav)
#   GENRE_READY_TIMEOUT     seconds to wait for /readyz (600)
set -Eeuo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BENTOML_HOME="${BENTOML_HOME:-$HOME/bentoml}"
PORT="${GENRE_CONTAINER_PORT:-3300}"
IMAGE="${GENRE_IMAGE:-}"
BASE_ROOT="${GENRE_BASE_ROOT:-/var/tmp/genre-base}"
MIRROR="${GENRE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CLIP="${GENRE_SMOKE_CLIP:-$REPO/../shared/data/gtzan-samples/rock.00000.wav}"
READY_TIMEOUT="${GENRE_READY_TIMEOUT:-600}"
BENTO="genre_detector"
SKIP_BUILD=0
BATCH=0

usage() { sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --port) PORT="$2"; shift 2 ;;
        --port=*) PORT="${1#*=}"; shift ;;
        --image) IMAGE="$2"; shift 2 ;;
        --skip-build) SKIP_BUILD=1; shift ;;
        --batch) BATCH=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -z "$IMAGE" ]]; then
    if [[ $BATCH -eq 1 ]]; then IMAGE="genre-detector-batch:latest"; else IMAGE="genre-detector:latest"; fi
fi
[[ "$PORT" =~ ^[0-9]+$ ]] || { echo "bad port '$PORT'" >&2; exit 2; }

T0=$SECONDS
step() { printf '\n==> [%s, +%ss] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - T0))" "$*"; }
die() { echo "ERROR: $*" >&2; exit 1; }

if [[ -x "$REPO/.venv/bin/bentoml" ]]; then BENTOML="$REPO/.venv/bin/bentoml"
else BENTOML="$(command -v bentoml)" || die "bentoml not found (run 'make install' first)"; fi
[[ $EUID -eq 0 ]] || die "run as root: podman here runs rootful (chroot isolation, runc, host network)"
[[ -f "$CLIP" ]] || die "smoke-test clip not found: $CLIP (set GENRE_SMOKE_CLIP)"
command -v curl >/dev/null || die "curl is needed"

# --------------------------------------------------------------------------- 1. tools
step "tools: podman, buildah, runc, debootstrap, fuse-overlayfs"
missing=()
for pair in podman:podman buildah:buildah runc:runc debootstrap:debootstrap \
            fuse-overlayfs:fuse-overlayfs newuidmap:uidmap; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    echo "installing: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" containernetworking-plugins conmon
fi
podman --version; buildah --version; runc --version | head -1

# --------------------------------------------------------------------------- 2. containers.conf
# Rootful podman gives containers nofile=1048576 and nproc=max by default. Where root lacks
# CAP_SYS_RESOURCE (as in this sandbox) runc cannot raise them and every RUN/run fails with
# "error setting rlimit type 7 (nofile) / 6 (nproc): operation not permitted". Pin both to
# what podman's own processes have: nofile = our hard limit, nproc = min(hard, pid_max)
# (conmon runs with nproc = kernel.pid_max here: 32768; 32769 already fails).
step "containers.conf: default_ulimits"
CONF=/etc/containers/containers.conf
MARK="# written by genre-detector deploy/build_container.sh"
hard="$(ulimit -Hn)"; if [[ "$hard" == unlimited || "$hard" -gt 1048576 ]]; then hard=1048576; fi
nproc="$(ulimit -Hu)"; pid_max="$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 32768)"
if [[ "$nproc" == unlimited || "$nproc" -gt "$pid_max" ]]; then nproc="$pid_max"; fi
want="$MARK
[containers]
default_ulimits = [\"nofile=$hard:$hard\", \"nproc=$nproc:$nproc\"]"
if [[ ! -e "$CONF" ]] || grep -qF "$MARK" "$CONF"; then
    mkdir -p /etc/containers
    if [[ "$(cat "$CONF" 2>/dev/null)" != "$want" ]]; then printf '%s\n' "$want" > "$CONF"; fi
    cat "$CONF"
elif grep -Eq '^[[:space:]]*default_ulimits' "$CONF"; then
    echo "$CONF has its own default_ulimits: left as is"
else
    die "$CONF exists (not ours) without default_ulimits; add under [containers]:
  default_ulimits = [\"nofile=$hard:$hard\", \"nproc=$nproc:$nproc\"]"
fi

# --------------------------------------------------------------------------- 3. bentoml build
cd "$REPO"
if [[ $SKIP_BUILD -eq 0 ]]; then
    step "bentoml build (BENTOML_HOME=$BENTOML_HOME)"
    build_args=(build -o tag)
    # A store inside the repo (e.g. BENTOML_HOME=.bentoml) is walked as part of the build
    # context: `service.py` matches every copy under .bentoml/{tmp,bentos}, including the
    # staging dir being written, and the build recurses until "File name too long".
    # Unless .bentoignore already excludes it, build from a copy of bentofile.yaml that does.
    home_real="$(realpath -m "$BENTOML_HOME")"; store=""
    if [[ "$home_real/" == "$REPO/"* ]]; then
        rel="${home_real#"$REPO/"}"
        grep -Eqx "/?$rel/?" "$REPO/.bentoignore" 2>/dev/null || store="/$rel/"
    fi
    # --batch: the same Bento plus pyproject's [batch] extra (Ray Data, pyarrow, tqdm), the
    # image deploy/ray/rayjob.yaml runs.
    if [[ -n "$store" || $BATCH -eq 1 ]]; then
        bentofile="$(mktemp --suffix=.yaml)"
        py="$(dirname "$BENTOML")/python"; [[ -x "$py" ]] || py=python3
        "$py" - "$REPO" "$bentofile" "$store" "$BATCH" <<'EOF'
import sys, tomllib, yaml
repo, dst, store, batch = sys.argv[1:]
cfg = yaml.safe_load(open(f"{repo}/bentofile.yaml"))
if store:
    cfg["exclude"] = list(cfg.get("exclude") or []) + [store]
if batch == "1":
    extras = tomllib.load(open(f"{repo}/pyproject.toml", "rb"))["project"]["optional-dependencies"]
    cfg["python"]["packages"] += [p for p in extras["batch"] if not p.startswith("genre-detector")]
yaml.safe_dump(cfg, open(dst, "w"), sort_keys=False)
EOF
        what="bentofile.yaml"; [[ -z "$store" ]] || what+=", excluding $store"
        [[ $BATCH -eq 0 ]] || what+=", with the [batch] extra"
        echo "building from $bentofile ($what)"
        build_args+=(-f "$bentofile")
    fi
    tag="$("$BENTOML" "${build_args[@]}" | tail -1)"
    if [[ -n "${bentofile:-}" ]]; then rm -f "$bentofile"; fi
    tag="${tag#__tag__:}"
    [[ "$tag" == "$BENTO":* ]] || die "bentoml build printed no tag (got '$tag')"
    echo "built $tag"
else
    tag="$BENTO:latest"
fi
BENTO_DIR="$("$BENTOML" get "$tag" -o path)"
DOCKERFILE="$BENTO_DIR/env/docker/Dockerfile"
[[ -f "$DOCKERFILE" ]] || die "no Dockerfile in $BENTO_DIR"
BASE_IMAGE="$(awk 'toupper($1)=="FROM" {print $2; exit}' "$DOCKERFILE")"
echo "Dockerfile FROM: $BASE_IMAGE"

# --------------------------------------------------------------------------- 4. base image
# A stand-in for the Docker Hub image: Debian bookworm (its python3 is 3.11), python3-venv,
# pip, `python` on PATH, pip allowed to install system-wide (no EXTERNALLY-MANAGED), and the
# host's extra CA certificates (a TLS-intercepting egress proxy needs them for pip and uv).
# BASE_RECIPE names this recipe: a stand-in made by an older one is made again (an image
# pulled from Docker Hub, which sets PYTHON_VERSION, is always used as it is).
BASE_RECIPE=2
base_names=("$BASE_IMAGE")
[[ "$BASE_IMAGE" == */* ]] || base_names+=("docker.io/library/$BASE_IMAGE")
# Every name is checked: buildah may resolve the FROM to either (docker.io/library/ first).
need_base=0
if [[ $SKIP_BUILD -eq 0 ]]; then
    for n in "${base_names[@]}"; do
        if ! podman image exists "$n"; then
            need_base=1
        elif ! podman image inspect --format '{{.Config.Env}}' "$n" | grep -q PYTHON_VERSION=; then
            made_by="$(podman image inspect --format '{{index .Labels "genre.base-recipe"}}' "$n")"
            [[ "$made_by" == "$BASE_RECIPE" ]] || need_base=1
        fi
    done
fi
if [[ $need_base -eq 1 ]]; then
    step "base image $BASE_IMAGE from debootstrap ($BASE_ROOT)"
    case "$BASE_IMAGE" in python:3.11*) ;; *)
        die "the local base image is made for python:3.11 (Debian bookworm); the Dockerfile wants $BASE_IMAGE" ;;
    esac
    if [[ "$(cat "$BASE_ROOT/.genre-base-complete" 2>/dev/null)" != "$BASE_RECIPE" ]]; then
        rm -rf "$BASE_ROOT.tmp"
        debootstrap --variant=minbase \
            --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
            bookworm "$BASE_ROOT.tmp" "$MIRROR"
        r="$BASE_ROOT.tmp"
        rm -f "$r"/usr/lib/python3*/EXTERNALLY-MANAGED
        [[ -e "$r/usr/bin/python" ]] || ln -s python3 "$r/usr/bin/python"
        [[ -e "$r/usr/bin/pip" ]] || printf '#!/bin/sh\nexec python3 -m pip "$@"\n' > "$r/usr/bin/pip"
        chmod 755 "$r/usr/bin/pip"
        ln -sf /usr/bin/python3 "$r/usr/local/bin/python"
        cat > "$r/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
EOF
        if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
            cp /usr/local/share/ca-certificates/*.crt "$r/usr/local/share/ca-certificates/"
            chroot "$r" update-ca-certificates
        fi
        chroot "$r" apt-get clean
        rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin
        # Slim, as Debian's own -slim images are made (debuerreotype --slimify): no manuals,
        # documentation or translations, now or in packages installed later.
        mkdir -p "$r/etc/dpkg/dpkg.cfg.d"
        printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
            'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/info/*' \
            'path-exclude /usr/share/linda/*' 'path-exclude /usr/share/lintian/overrides/*' \
            'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
            'path-exclude /usr/share/man/*' > "$r/etc/dpkg/dpkg.cfg.d/docker-slim"
        find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
        find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
        rm -rf "$r"/usr/share/{groff,info,linda,lintian/overrides,man}/*
        find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
        rm -rf "$r"/var/cache/debconf/*-old "$r"/var/log/*.log "$r"/var/log/apt/*
        rm -rf "$BASE_ROOT"; mv "$r" "$BASE_ROOT"
        echo "$BASE_RECIPE" > "$BASE_ROOT/.genre-base-complete"
    else
        echo "reusing debootstrap root $BASE_ROOT"
    fi
    # Imported under its full name, then tagged by id: a short name given to `podman import`
    # or `podman tag` may resolve to an older image of the same name.
    old_ids=()
    for n in "${base_names[@]}"; do
        old_ids+=("$(podman image inspect --format '{{.Id}}' "$n" 2>/dev/null || true)")
    done
    full="${base_names[-1]}"; [[ "$full" == */* ]] || full="localhost/$full"
    tar -C "$BASE_ROOT" --numeric-owner --exclude=./.genre-base-complete \
        --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
        podman import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
            --change 'ENV UV_SYSTEM_CERTS=true' \
            --change 'CMD ["python3"]' \
            --change "LABEL genre.base-recipe=$BASE_RECIPE" \
            - "$full" >/dev/null
    base_id="$(podman image inspect --format '{{.Id}}' "$full")"
    for n in "${base_names[@]}"; do podman tag "$base_id" "$n"; done
    for id in "${old_ids[@]}"; do   # stand-ins of an older recipe, now untagged
        if [[ -n "$id" && "$id" != "$base_id" ]] &&
           [[ "$(podman image inspect --format '{{len .RepoTags}}' "$id" 2>/dev/null)" == 0 ]]; then
            podman rmi "$id" >/dev/null 2>&1 || true
        fi
    done
    podman run --rm --runtime runc --network host "$BASE_IMAGE" \
        sh -c 'python --version && pip --version' || die "base image does not run"
elif [[ $SKIP_BUILD -eq 0 ]]; then
    echo "base image $BASE_IMAGE already present: $(podman image inspect --format '{{.Id}}' "$BASE_IMAGE" | cut -c1-12)"
fi

# --------------------------------------------------------------------------- 5. containerize
if [[ $SKIP_BUILD -eq 0 ]]; then
    step "bentoml containerize $tag --backend podman -t $IMAGE"
    old_id="$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
    t_build=$SECONDS
    # squash: the new layers become one, so what deploy/image_slim.sh (bentofile's
    # setup_script, on with IMAGE_SLIM=1) takes out after the install never reaches the image
    BUILDAH_ISOLATION=chroot "$BENTOML" containerize "$tag" --backend podman -t "$IMAGE" \
        --opt squash --opt build-arg=IMAGE_SLIM=1
    BUILD_S=$((SECONDS - t_build))
    echo "containerize took ${BUILD_S}s"
    # the image that had this name before is now untagged: drop it (and only it)
    new_id="$(podman image inspect --format '{{.Id}}' "$IMAGE")"
    if [[ -n "$old_id" && "$old_id" != "$new_id" ]] &&
       [[ "$(podman image inspect --format '{{len .RepoTags}}' "$old_id" 2>/dev/null)" == 0 ]]; then
        podman rmi "$old_id" >/dev/null 2>&1 && echo "removed the previous $IMAGE (${old_id:0:12})" || true
    fi
fi
podman image exists "$IMAGE" || die "image $IMAGE not found"
podman images --format '{{.Repository}}:{{.Tag}}  {{.ID}}  {{.Size}}  {{.Created}}' "$IMAGE"

# --------------------------------------------------------------------------- 6. run + smoke test
step "smoke test: the service and the delivery worker from $IMAGE (host port $PORT)"
if curl -s -o /dev/null --max-time 3 "http://127.0.0.1:$PORT/"; then
    die "something already answers on port $PORT; pick another with --port"
fi
py="$(dirname "$BENTOML")/python"; [[ -x "$py" ]] || py=python3
if [[ $BATCH -eq 1 ]]; then
    "$py" "$REPO/deploy/smoke_image.py" --image "$IMAGE" --clip "$CLIP" --batch ||
        die "the batch image's smoke test failed"
else
    "$py" "$REPO/deploy/smoke_image.py" --image "$IMAGE" --port "$PORT" --clip "$CLIP" \
        --ready-timeout "$READY_TIMEOUT" || die "the image's smoke test failed"
fi

step "done in $((SECONDS - T0))s${BUILD_S:+ (containerize ${BUILD_S}s)}"

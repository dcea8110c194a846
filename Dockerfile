# dnsserver container image: a drop-in for the CoreDNS image in the kube-system Deployment.
#
# Build:  podman build -t dnsserver:0.1.0 .      (or: docker build -t dnsserver:0.1.0 .)
# Run:    podman run --rm -p 127.0.0.1:1053:53/udp dnsserver:0.1.0 --snapshot zones/demo-cluster.yaml
# See docs/deploying.md for the Kubernetes side.

# One pinned base for both stages: the virtual env built in the first stage links to this
# interpreter, so the runtime stage must carry the very same one.
FROM python:3.11.14-slim-bookworm AS build
# Labelled too, so a builder's leftover build-stage images can be found and pruned.
LABEL org.opencontainers.image.title="dnsserver"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml ./
COPY dnsserver/ dnsserver/
# The wheel carries the demo cluster (share/dnsserver/zones) for `dnsserver` without a Corefile.
COPY zones/ zones/

# A plain (non-editable) install into its own venv; pip byte-compiles it here because the
# runtime root filesystem is read-only and could not cache .pyc files later.
RUN python3 -m venv /opt/dnsserver \
    && /opt/dnsserver/bin/pip install /src \
    && /opt/dnsserver/bin/python -c "import dnsserver"


FROM python:3.11.14-slim-bookworm

LABEL org.opencontainers.image.title="dnsserver" \
      org.opencontainers.image.description="Cluster DNS for Kubernetes, a drop-in for CoreDNS" \
      org.opencontainers.image.licenses="Apache-2.0"

# Two one-time fixes to the base, as root:
# - The official slim image strips the stdlib's .pyc files; compile them once here so a pod
#   with a read-only root does not recompile the stdlib on every start (best effort: a file
#   that does not compile is skipped, as the interpreter itself would).
# - File capability cap_net_bind_service=+ep on the interpreter, so the non-root user can bind
#   port 53 when the pod grants NET_BIND_SERVICE (as CoreDNS does with setcap on its binary).
#   The xattr is written directly, since libcap's setcap is not in the slim image. Layout:
#   VFS_CAP_REVISION_2 | EFFECTIVE, then permitted/inheritable words; 0x400 is bit 10,
#   CAP_NET_BIND_SERVICE.
RUN python3 -c "import compileall, sysconfig; \
compileall.compile_dir(sysconfig.get_path('stdlib'), quiet=2, workers=0)" \
    && python3 -c "import os, struct, sys; \
os.setxattr(os.path.realpath(sys.executable), 'security.capability', \
struct.pack('<5I', 0x02000001, 0x400, 0, 0, 0))"

COPY --from=build /opt/dnsserver /opt/dnsserver
# The demo cluster, served by `--snapshot zones/demo-cluster.yaml` (relative to WORKDIR).
COPY zones/ /opt/dnsserver/zones/

ENV PATH=/opt/dnsserver/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/dnsserver
# Numeric uid/gid (the "nonroot" ids of distroless images) so runAsNonRoot can verify it.
USER 65532:65532

EXPOSE 53/udp 53/tcp 8080/tcp 8181/tcp 9153/tcp
# The server itself handles SIGTERM (lame duck, then exit) as PID 1; no init shim needed.
STOPSIGNAL SIGTERM

# Same shape as the CoreDNS image: the Deployment's args ("-conf", "/etc/coredns/Corefile")
# replace CMD and keep working unchanged.
ENTRYPOINT ["dnsserver"]
CMD ["-conf", "/etc/coredns/Corefile"]

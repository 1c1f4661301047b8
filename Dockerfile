# Dockerfile — the kjobs container image, in two stages:
#   build    debian:bookworm with the -dev packages and cmake; builds only the `kjobs` target
#            (tests off, so no cmocka) with the project's default RelWithDebInfo (-O2, the
#            build every developer and CI compiles warning-free under -Werror), then strips it.
#   runtime  debian:bookworm-slim with only the shared libraries the binary links
#            (librdkafka1, libavro23, libconfig9, libjansson4, libmicrohttpd12) and
#            ca-certificates, a non-root numeric user (10001, what the Helm chart's
#            runAsNonRoot expects), ENTRYPOINT ["kjobs"], CMD ["run"].
# tests/helm/check_dockerfile.sh checks the runtime package list against `ldd` of a real build.
#
#   docker build -t kjobs:0.1.0 .
#   docker run --rm -v $PWD/kjobs.cfg:/etc/kjobs/config/kjobs.cfg kjobs:0.1.0 run -c /etc/kjobs/config/kjobs.cfg

ARG DEBIAN_RELEASE=bookworm

FROM debian:${DEBIAN_RELEASE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      librdkafka-dev libavro-dev libconfig-dev libjansson-dev libmicrohttpd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKJOBS_TESTS=OFF \
 && cmake --build /build --target kjobs -j"$(nproc)" \
 && install -D -s -m 0755 /build/kjobs /out/usr/local/bin/kjobs \
 && install -D -m 0644 include/kjobs.h /out/usr/local/include/kjobs.h

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      librdkafka1 libavro23 libconfig9 libjansson4 libmicrohttpd12 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 kjobs \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin kjobs \
 && mkdir -p /etc/kjobs/config /opt/kjobs/plugins /opt/kjobs/exec
COPY --from=build /out/ /
WORKDIR /var/lib/kjobs
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["kjobs"]
CMD ["run"]

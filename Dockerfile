# Dockerfile — the kjobs container image, in two stages:
#   build    debian:bookworm with the -dev packages, cmake and npm; builds librdkafka the way
#            every developer does (scripts/build-librdkafka.sh: the pinned npm package's bundled
#            source, against Debian's OpenSSL, SASL, zstd, lz4, zlib and curl), then only the
#            `kjobs` target (tests off, so no cmocka) with the project's default RelWithDebInfo
#            (-O2, the build every developer and CI compiles warning-free under -Werror), and
#            strips it.
#   runtime  debian:bookworm-slim with only the shared libraries the binary links: that
#            librdkafka.so.1 in /usr/local/lib (not Debian's librdkafka1), the libraries it
#            links (libssl3, libsasl2-2, libzstd1, liblz4-1, zlib1g, libcurl4; Debian 13 names
#            the first and last libssl3t64 / libcurl4t64 and apt picks them for these names),
#            libconfig9, libjansson4, libmicrohttpd12, libicu72 (cron time zones;
#            Debian 13: libicu76), libjemalloc2 (the allocator, cli/malloc_conf.c) and
#            ca-certificates; for SASL
#            GSSAPI (Kerberos) Cyrus SASL's GSSAPI plugin (libsasl2-modules-gssapi-mit, loaded at
#            run time, so no ldd shows it) and kinit (krb5-user), which librdkafka runs to get and
#            renew tickets from the keytab; a non-root
#            numeric user (10001, what the Helm chart's runAsNonRoot expects),
#            ENTRYPOINT ["kjobs"], CMD ["run"].
# tests/helm/check_dockerfile.sh checks the runtime package list against `ldd` of a real build.
#
#   docker build -t kjobs:0.1.0 .
#   docker run --rm -v $PWD/kjobs.cfg:/etc/kjobs/config/kjobs.cfg kjobs:0.1.0 run -c /etc/kjobs/config/kjobs.cfg

ARG DEBIAN_RELEASE=bookworm

FROM debian:${DEBIAN_RELEASE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config npm python3 ca-certificates \
      libssl-dev libsasl2-dev libzstd-dev liblz4-dev zlib1g-dev libcurl4-openssl-dev \
      libavro-dev libconfig-dev libjansson-dev libmicrohttpd-dev libicu-dev libjemalloc-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN prefix=$(bash scripts/build-librdkafka.sh) \
 && cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKJOBS_TESTS=OFF \
      -DKJOBS_RDKAFKA_PREFIX="$prefix" \
 && cmake --build /build --target kjobs -j"$(nproc)" \
 && install -D -s -m 0755 /build/kjobs /out/usr/local/bin/kjobs \
 && install -D -s -m 0644 "$prefix/lib/librdkafka.so.1" /out/usr/local/lib/librdkafka.so.1 \
 && install -D -m 0644 include/kjobs.h /out/usr/local/include/kjobs.h

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libssl3 libsasl2-2 libzstd1 liblz4-1 zlib1g libcurl4 \
      libconfig9 libjansson4 libmicrohttpd12 libicu72 libjemalloc2 ca-certificates \
      libsasl2-modules-gssapi-mit krb5-user \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 kjobs \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin kjobs \
 && mkdir -p /etc/kjobs/config /opt/kjobs/plugins /opt/kjobs/exec
COPY --from=build /out/ /
# the binary's RPATH names the build stage's prefix, absent here: the loader finds
# /usr/local/lib/librdkafka.so.1 through the cache
RUN ldconfig
WORKDIR /var/lib/kjobs
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["kjobs"]
CMD ["run"]

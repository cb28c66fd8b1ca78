# PicoClaw built from its release tag the way upstream's GoReleaser does:
# pure Go (`goolm` instead of libolm), static, for x86_64 and aarch64.
{
  lib,
  buildGoModule,
  fetchFromGitHub,
  pin,
  source,
}:
buildGoModule {
  pname = "picoclaw";
  inherit (source) version;

  src = fetchFromGitHub {
    owner = "sipeed";
    repo = "picoclaw";
    rev = "v${source.version}";
    hash = pin "picoclaw" source "hash";
  };
  vendorHash = pin "picoclaw" source "vendorHash";
  # Dependencies in the module-proxy layout, as PicoClaw's community
  # flakes build it; `vendorHash` is the hash of that layout.
  proxyVendor = true;

  subPackages = [ "cmd/picoclaw" ];
  # Embeds the onboarding workspace (`go:generate` copies it in).
  preBuild = ''
    go generate ./cmd/picoclaw/...
  '';
  tags = [
    "goolm"
    "stdjson"
  ];
  env.CGO_ENABLED = 0;
  ldflags = [
    "-s"
    "-w"
    "-X github.com/sipeed/picoclaw/pkg/config.Version=${source.version}"
  ];

  meta = {
    description = "Ultra-light AI assistant in Go";
    homepage = "https://github.com/sipeed/picoclaw";
    license = lib.licenses.mit;
    mainProgram = "picoclaw";
    platforms = [
      "x86_64-linux"
      "aarch64-linux"
    ];
  };
}

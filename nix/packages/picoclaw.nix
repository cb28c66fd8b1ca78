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

  subPackages = [ "cmd/picoclaw" ];
  tags = [
    "goolm"
    "stdjson"
  ];
  env.CGO_ENABLED = 0;
  ldflags = [
    "-s"
    "-w"
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

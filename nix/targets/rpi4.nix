# A Raspberry Pi 4: nixpkgs' generic aarch64 SD image. Its firmware
# partition chain-loads U-Boot, which boots the mainline kernel through
# extlinux; no nixos-hardware needed. The same module keeps working after
# `nixos-rebuild switch` on the Pi.
{ modulesPath, ... }:
{
  imports = [ "${modulesPath}/installer/sd-card/sd-image-aarch64.nix" ];

  # zstd-compressed image: `zstd -d <image> | dd of=/dev/sdX` (README).
  sdImage.compressImage = true;
}

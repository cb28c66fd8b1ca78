# A Google Compute Engine VM: nixpkgs' GCE image module (which imports the
# runtime guest settings of google-compute-config.nix: guest agent, OS
# Login, metadata clock, virtio/NVMe, serial console, growing root).
{ modulesPath, ... }:
{
  imports = [ "${modulesPath}/virtualisation/google-compute-image.nix" ];

  # Legacy (BIOS) boot: EFI GCE images do not boot as Shielded VMs
  # (NixOS/nixpkgs#292521). Set `virtualisation.googleComputeImage.efi` and
  # create the image with `--guest-os-features=UEFI_COMPATIBLE` to change it.
  virtualisation.googleComputeImage.compressionLevel = 9;
}

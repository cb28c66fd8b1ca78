# A Google Compute Engine VM: nixpkgs' GCE image module (which imports the
# runtime guest settings of google-compute-config.nix: guest agent, OS
# Login, metadata clock, virtio/NVMe, serial console, growing root).
{ config, pkgs, modulesPath, ... }:
{
  imports = [ "${modulesPath}/virtualisation/google-compute-image.nix" ];

  # Legacy BIOS boot from an MBR disk (GRUB): EFI GCE images do not boot as
  # Shielded VMs (NixOS/nixpkgs#292521). Set
  # `virtualisation.googleComputeImage.efi` and create the image with
  # `--guest-os-features=UEFI_COMPATIBLE` to change it.
  virtualisation.googleComputeImage.compressionLevel = 9;

  # The image's /etc/nixos/configuration.nix. nixpkgs' default imports only
  # the GCE profile, so a plain `nixos-rebuild switch` on the VM would
  # replace the appliance with a bare GCE system; this one refuses and says
  # how to rebuild.
  virtualisation.googleComputeImage.configFile = toString (
    pkgs.writeText "configuration.nix" ''
      throw '''
        This VM is host `${config.appliance.host}` of the agent appliance, built from its flake.
        Rebuild it from a checkout of that flake:
          nixos-rebuild switch --flake <checkout>#${config.appliance.host} --target-host root@<this VM>
        (or on the VM itself: nixos-rebuild switch --flake <checkout>#${config.appliance.host}).
      '''
    ''
  );
}

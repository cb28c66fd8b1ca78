# A Raspberry Pi 4 booting from an SD card: nixpkgs' SD image builder
# (sd-card/sd-image.nix: MBR, a FAT firmware partition, ext4 root grown to
# the card at first boot) with only the Pi 4's boot chain. The firmware
# starts U-Boot, which boots nixpkgs' mainline kernel through extlinux, so
# `nixos-rebuild switch` on the Pi keeps working. nixpkgs' generic
# sd-image-aarch64.nix is not used: it adds profiles/base.nix (installer
# tools, every file system including ZFS) and boards we do not boot.
{
  config,
  pkgs,
  modulesPath,
  ...
}:
let
  firmware = "${pkgs.raspberrypifw}/share/raspberrypi/boot";
  # The Pi 4 section of the firmware's config.txt: 64-bit, U-Boot as the
  # "kernel", the GIC armstub U-Boot expects, a UART (U-Boot needs it) and
  # no firmware overlays on the kernel's framebuffer.
  configTxt = pkgs.writeText "config.txt" ''
    [pi4]
    kernel=u-boot-rpi4.bin
    enable_gic=1
    armstub=armstub8-gic.bin
    disable_overscan=1
    arm_boost=1

    [all]
    arm_64bit=1
    enable_uart=1
    avoid_warnings=1
  '';
in
{
  imports = [ "${modulesPath}/installer/sd-card/sd-image.nix" ];

  boot.loader.grub.enable = false;
  boot.loader.generic-extlinux-compatible.enable = true;
  # The serial consoles of the Pi 4 under the mainline kernel (mini UART,
  # PL011), and the screen last, which becomes /dev/console.
  boot.kernelParams = [
    "console=ttyS1,115200n8"
    "console=ttyAMA0,115200n8"
    "console=tty0"
  ];

  sdImage = {
    # zstd-compressed image: `zstd -d <image> | dd of=/dev/sdX` (docs/building.md).
    compressImage = true;
    populateFirmwareCommands = ''
      cp ${firmware}/start4*.elf ${firmware}/fixup4*.dat firmware/
      cp ${firmware}/bcm2711-rpi-4-b.dtb ${firmware}/bcm2711-rpi-400.dtb firmware/
      cp ${pkgs.ubootRaspberryPi4_64bit}/u-boot.bin firmware/u-boot-rpi4.bin
      cp ${pkgs.raspberrypi-armstubs}/armstub8-gic.bin firmware/
      cp ${configTxt} firmware/config.txt
    '';
    populateRootCommands = ''
      mkdir -p ./files/boot
      ${config.boot.loader.generic-extlinux-compatible.populateCmd} -c ${config.system.build.toplevel} -d ./files/boot
    '';
  };
}

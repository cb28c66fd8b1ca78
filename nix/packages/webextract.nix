# The appliance's own page extraction service (webextract.py says what it
# speaks): one Python file on nixpkgs' trafilatura, for the `web_extract`
# tool of Hermes' `crawler`. flake8 checks it when built.
{
  writers,
  python3Packages,
}:
writers.writePython3Bin "appliance-webextract" {
  libraries = [ python3Packages.trafilatura ];
  # Long lines: messages and the docstring's API sketch.
  flakeIgnore = [ "E501" ];
} (builtins.readFile ./webextract.py)

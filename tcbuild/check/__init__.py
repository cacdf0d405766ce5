"""Will it run: the rules over an image, the ELF loader model, running the check on a build, and
the secrets a published image must not hold."""

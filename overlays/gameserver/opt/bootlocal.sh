#!/bin/sh
# Runs at the end of boot, as root. Templated and completed by the image stage.

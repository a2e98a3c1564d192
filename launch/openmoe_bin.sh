# Sourced (not run) by the scripts that train with the openmoe binary, from the repository root:
# sets `bin` to $OPENMOE_BIN if the caller set it, else builds build/launch/openmoe with
# launch/build.sh, and exports OPENMOE_BIN for launch/mpirun_local.sh.
if [[ -z "${OPENMOE_BIN:-}" ]]; then
  launch/build.sh openmoe
  OPENMOE_BIN="$PWD/build/launch/openmoe"
fi
export OPENMOE_BIN
bin="$OPENMOE_BIN"

"""The console scripts, each a thin module over the library (nothing in the library imports this
package). Every command shares cli/common.py's prologue."""

"""The Raspberry Pi agent: Modbus (SunSpec) in, MQTT out, store-and-forward, commands.

Installs with the base `wattfleet` distribution only: no hub dependencies here.
"""

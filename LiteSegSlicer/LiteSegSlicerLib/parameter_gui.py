"""Which widgets of a module panel are bound to parameter-node parameters (Qt-free: it only
reads a property of the widgets it is given).

`parameterNodeWrapper`'s `connectGui(ui)` returns its tag only from Slicer 5.10 on (5.8 returns
None, so `disconnectGui` cannot undo it and connections pile up on every module entry);
`connectParametersToGui(parameterWidgets(ui))` returns the tag on both.
"""

from __future__ import annotations

PARAMETER_NAME_PROPERTY = "SlicerParameterName"  # set on the widgets in the .ui files


def parameterWidgets(ui) -> dict:
    """{parameter name: widget} of the widgets of a `slicer.util.childWidgetVariables` namespace
    that carry a "SlicerParameterName" property, as `connectGui` finds them."""
    widgets = {}
    for widget in vars(ui).values():
        name = widget.property(PARAMETER_NAME_PROPERTY) if hasattr(widget, "property") else None
        if name:
            widgets[str(name)] = widget
    return widgets

"""Calendar protocols behind one interface (``base.Provider``); each module knows only its
wire format."""

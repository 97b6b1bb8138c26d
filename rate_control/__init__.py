"""Rate control: which model and which quantiser step land a file inside the band."""

// Reads C-CDA documents back with Medplum's C-CDA to FHIR conversion (@medplum/ccda), an implementation nobody
// on this project wrote. Usage: node read_ccda.cjs FILE.xml... ; prints one JSON object {file: FHIR Bundle}.
'use strict';
const fs = require('node:fs');
const { convertCcdaToFhir, convertXmlToCcda } = require('@medplum/ccda');

const out = {};
for (const file of process.argv.slice(2)) {
  try {
    out[file] = convertCcdaToFhir(convertXmlToCcda(fs.readFileSync(file, 'utf8')));
  } catch (error) {
    out[file] = { error: String(error && error.message ? error.message : error) };
  }
}
process.stdout.write(JSON.stringify(out));
